"""The split counters paged_decode's split kernel counts its finished splits in, and the
buffer it writes its partial results to."""
import gc
import weakref

import torch

from kernels import split_kv
from kernels.split_kv import decode_partials, split_counters


def test_counters_are_shared_zeroed_and_grow_keeping_older_buffers(monkeypatch):
    """One buffer per device until a launch needs more; a larger one replaces it, and the
    older stays allocated, since a CUDA graph captured before may still hold its address."""
    monkeypatch.setattr(split_kv, "_COUNTERS", {})
    cpu = torch.device("cpu")
    small = split_counters(cpu, 3)
    assert small.dtype == torch.int32 and small.numel() >= 3 and not small.any()
    assert split_counters(cpu, 2) is small
    large = split_counters(cpu, 10)
    assert large.numel() >= 10 and not large.any()
    assert split_counters(cpu, 4) is large
    older = weakref.ref(small)
    del small
    gc.collect()
    assert older() is not None


def test_decode_partials_share_one_buffer_and_grow_keeping_older_ones(monkeypatch):
    """Every split launch's partials are views of one float32 buffer per device: outputs
    [rows * heads * splits * head_dim], then as many log-sum-exps, apart. A launch needing more
    gets a larger buffer; the older stays allocated, as the counters do."""
    monkeypatch.setattr(split_kv, "_DECODE_PARTIALS", {})
    cpu = torch.device("cpu")
    out, lse = decode_partials(cpu, 2, 4, 8, 3)
    assert out.dtype == lse.dtype == torch.float32
    assert out.numel() == 2 * 4 * 3 * 8 and lse.numel() == 2 * 4 * 3
    assert lse.data_ptr() == out.data_ptr() + out.numel() * 4
    again, _ = decode_partials(cpu, 1, 4, 8, 5)
    assert again.data_ptr() == out.data_ptr()
    grown, grown_lse = decode_partials(cpu, 4, 4, 8, 3)
    assert grown.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
    assert grown_lse.data_ptr() == grown.data_ptr() + grown.numel() * 4
    held = split_kv._DECODE_PARTIALS[cpu]
    assert [buffer.numel() for buffer in held] == [2 * 4 * 3 * 9, 4 * 4 * 3 * 9]
    assert held[0].data_ptr() == out.data_ptr()

