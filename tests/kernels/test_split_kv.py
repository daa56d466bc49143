"""The split counters paged_decode's split kernel counts its finished splits in."""
import gc
import weakref

import torch

from kernels import split_kv
from kernels.split_kv import split_counters


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
