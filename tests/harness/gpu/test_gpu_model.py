"""The decoder: seeded weights, transformers' names as views, the same logits as transformers."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from allocators import make_allocator  # noqa: E402
from harness.engine.executor import KVGeometry  # noqa: E402
from harness.gpu.kv_pool import KVPool  # noqa: E402
from harness.gpu.batching import (  # noqa: E402
    DecodeWork, PrefillWork, layout_step, to_device,
)
from harness.gpu.model import DecoderConfig, random_weights, row_max  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402


def test_weights_are_seeded_and_shaped_like_the_preset():
    config = DecoderConfig.from_model_spec(model_preset("tiny"))
    a = random_weights(config, seed=3, dtype=torch.float32, device="cpu")
    b = random_weights(config, seed=3, dtype=torch.float32, device="cpu")
    assert torch.equal(a.layers[1].qkv, b.layers[1].qkv)
    assert a.layers[0].qkv.shape == ((4 + 2 * 2) * 16, 64)
    assert a.layers[0].gate_up.shape == (256, 64)
    count = sum(t.numel() for t in (a.embed, a.norm, a.lm_head))
    count += sum(t.numel() for lw in a.layers for t in vars(lw).values())
    assert count == model_preset("tiny").num_params


@pytest.mark.parametrize("rows, width", [(1, 128256), (17, 128256), (3, 1000), (5, 97)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_row_max_is_max_over_the_row_with_the_first_index(rows, width, dtype):
    """Ties everywhere (7 distinct values), a maximum in the last chunk only, and a width of
    no divisor under the chunk count (97: one pass)."""
    gen = torch.Generator().manual_seed(rows * width)
    x = torch.randint(-3, 4, (rows, width), generator=gen).to(dtype)
    x[0, -1] = 9
    best, index = row_max(x)
    expected_best, expected_index = x.max(dim=-1)
    assert torch.equal(best, expected_best) and torch.equal(index, expected_index)
    assert torch.equal(index, x.argmax(dim=-1)) and index[0] == width - 1


def test_transformers_state_dict_is_views_of_our_tensors(tiny_decoder):
    pytest.importorskip("transformers")
    from harness.gpu.baseline import build_hf_model

    hf = build_hf_model(tiny_decoder.config, tiny_decoder.weights)
    ours = {t.untyped_storage().data_ptr() for lw in tiny_decoder.weights.layers
            for t in vars(lw).values()}
    theirs = hf.model.layers[0].self_attn.k_proj.weight.untyped_storage().data_ptr()
    assert theirs in ours


def test_prefill_logits_match_transformers(tiny_decoder, host_tables):
    pytest.importorskip("transformers")
    from harness.gpu.baseline import build_hf_model

    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 256, n) for n in (5, 19, 11)]
    alloc = make_allocator("paged", 256, block_size=4)
    pool = KVPool(KVGeometry(4, alloc.blocks_per_segment, 256), num_layers=2, num_kv_heads=2,
                  head_dim=16, dtype=torch.float32, device="cpu")
    work, tables = [], []
    for sid, prompt in enumerate(prompts):
        alloc.allocate(sid, len(prompt))
        tables.append(np.asarray(alloc.layout(sid).block_table, np.int64))
        work.append(PrefillWork(sid, prompt.astype(np.int64), 0, len(prompt), 1))
    pool.sync(list(alloc.segments()), [])
    no_decode = DecodeWork([], np.zeros(0, np.int64), np.zeros(0, np.int64))
    ids, rows, device_tables = host_tables(tables)
    step = to_device(layout_step(work, no_decode, ids, rows.array, 4), pool, device_tables,
                     torch.device("cpu"))
    assert step.num_decode_rows == 0
    step = dataclasses.replace(step, logit_rows=torch.arange(len(step.input_ids)))
    logits = tiny_decoder.forward(step, pool)
    hf = build_hf_model(tiny_decoder.config, tiny_decoder.weights)
    with torch.inference_mode():
        for chunk, prompt in zip(step.prefills, prompts):
            ref = hf(torch.from_numpy(prompt)[None]).logits[0]
            got = logits[chunk.start : chunk.start + chunk.num_new]
            assert chunk.num_new == len(prompt) and chunk.context == 0
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_static_batches_stop_at_the_deadline(tiny_decoder):
    pytest.importorskip("transformers")
    import time

    from harness.gpu.baseline import build_hf_model, static_batch_generate

    hf = build_hf_model(tiny_decoder.config, tiny_decoder.weights)
    prompts = [[5, 6, 7], [8, 9], [10], [11, 12]]
    full = static_batch_generate(hf, prompts, [2, 3, 1, 2], batch_size=2)
    assert (full.requests, full.output_tokens, full.generated_tokens) == (4, 8, 10)
    # Past the deadline: the first batch runs, no other starts.
    cut = static_batch_generate(hf, prompts, [2, 3, 1, 2], batch_size=2,
                                deadline=time.perf_counter())
    assert (cut.requests, cut.output_tokens, cut.generated_tokens) == (2, 5, 6)
