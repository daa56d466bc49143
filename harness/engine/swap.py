"""Preemption by swap: the bounded CPU swap space, and putting a request's KV back on the GPU.

A swapped request keeps its progress; its KV tokens (the shared prefix of forked samples once,
each sample's own tokens once) wait in host memory, sized by swap_space_bytes like vLLM's
--swap-space. The transfer time is the executor's business (PCIe bandwidth in the cost model).
"""
from __future__ import annotations

from allocators import Allocator, OutOfKVMemory
from harness.engine.sequences import Group


class SwapSpace:
    """Host memory for swapped KV, in tokens; never holds more than `slots`."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.used = 0
        self.peak = 0

    def fits(self, tokens: int) -> bool:
        return self.used + tokens <= self.slots

    def put(self, tokens: int) -> None:
        if not self.fits(tokens):
            raise ValueError(f"{tokens} tokens do not fit: {self.used} of {self.slots} used")
        self.used += tokens
        self.peak = max(self.peak, self.used)

    def take(self, tokens: int) -> None:
        self.used -= tokens


def restore(allocator: Allocator, g: Group) -> bool:
    """Re-create g's sequences with their sharing: the parent up to the fork, the children
    forked from it, then every sample's own tokens, and under a sliding window the window's
    start (room is taken for the whole KV first; the slide lets the part before the window go
    again). All or nothing: False, and no change, when the memory is not there."""
    parent = g.seq_ids[0]
    shared = g.fork_len if g.num_live > 1 else g.kv_len
    done: list[int] = []
    try:
        allocator.allocate(parent, shared, final_tokens=g.final_tokens)
        done.append(parent)
        for child in g.seq_ids[1 : g.num_live]:
            allocator.fork(parent, child)
            done.append(child)
        if g.kv_len > shared:
            for sid in done:
                allocator.extend(sid, g.kv_len - shared)
    except OutOfKVMemory:
        for sid in done:
            allocator.free(sid)
        return False
    if g.kv_start:
        for sid in done:
            allocator.slide(sid, g.kv_start)
    return True
