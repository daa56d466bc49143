"""The oracle itself, against attention written out per sequence with nothing paged about it."""
import math

import pytest
import torch

from kernels.reference import gather_kv, reference_decode


def test_matches_per_sequence_attention(make_cache, rel_err, device):
    cache = make_cache(context_lens=[1, 7, 30], num_kv_heads=2, head_dim=16, block_size=3,
                       blocks_per_segment=5, num_segments=4, dtype=torch.float64, seed=1)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(3, 8, 16, generator=gen, dtype=torch.float64).to(device)
    out = reference_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                           cache.context_lens, 5, compute_dtype=torch.float64)
    flat_k = torch.cat(cache.k_segments).view(-1, 2, 16)
    flat_v = torch.cat(cache.v_segments).view(-1, 2, 16)
    for b, n in enumerate(cache.context_lens.tolist()):
        slots = [int(cache.block_tables[b, i // 3]) * 3 + i % 3 for i in range(n)]
        k = flat_k[slots].repeat_interleave(4, dim=1)  # [n, Hq, D]
        v = flat_v[slots].repeat_interleave(4, dim=1)
        probs = torch.softmax(torch.einsum("hd,thd->ht", q[b], k) / math.sqrt(16), dim=-1)
        assert rel_err(out[b], torch.einsum("ht,thd->hd", probs, v)) < 1e-12


def test_gather_refuses_unbacked_segment(device):
    seg = torch.ones(2, 4, 1, 16, device=device)
    tables = torch.tensor([[0, 2]], dtype=torch.int32)
    with pytest.raises(IndexError, match="segment"):
        gather_kv([seg, None], tables, torch.tensor([6], dtype=torch.int32), 2)
