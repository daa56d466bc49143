"""Slot mappings after a scripted mixed workload: what a GPU pool would address.

Every written token of every live sequence maps to a slot inside a live segment, and two tokens
share a slot only when they are the same KV on purpose (a prefix-cache hit, or a fork's shared
history), never when their contents differ.
"""
from __future__ import annotations

import pytest

from allocators import make_allocator

CONFIGS = [
    pytest.param("static", {"fit": "first", "align_tokens": 16}, id="static-first"),
    pytest.param("static", {"fit": "best", "align_tokens": 16}, id="static-best"),
    pytest.param("paged", {"block_size": 16}, id="paged"),
    pytest.param("segmented", {"segment_tokens": 256}, id="segmented"),
    pytest.param("hybrid", {"block_size": 16, "segment_tokens": 256}, id="hybrid"),
]
SYSTEM = (11, 12, 13, 14)  # chunk hashes of a shared 64-token system prompt
OTHER = (11, 12, 13, 99)  # shares the first 48 tokens with SYSTEM
CHUNK_TOKENS = 16


class Workload:
    """Drives an allocator and remembers what each written token holds."""

    def __init__(self, alloc) -> None:
        self.alloc = alloc
        self.contents: dict[int, list[tuple]] = {}
        self.hashes: dict[int, tuple[int, ...]] = {}

    def token(self, seq: int, position: int) -> tuple:
        hashes = self.hashes[seq]
        if position < len(hashes) * CHUNK_TOKENS:
            return ("prefix", hashes[: position // CHUNK_TOKENS + 1], position)
        return ("own", seq, position)

    def allocate(self, seq: int, num_tokens: int, final_tokens: int, hashes=()) -> None:
        self.alloc.allocate(
            seq, num_tokens, final_tokens=final_tokens, prefix_hashes=hashes or None,
            chunk_tokens=CHUNK_TOKENS if hashes else 0,
        )
        self.hashes[seq] = hashes
        self.contents[seq] = [self.token(seq, p) for p in range(num_tokens)]

    def extend(self, seq: int, k: int) -> None:
        self.alloc.extend(seq, k)
        old = len(self.contents[seq])
        self.contents[seq] += [self.token(seq, p) for p in range(old, old + k)]

    def fork(self, parent: int, child: int) -> None:
        self.alloc.fork(parent, child)
        self.hashes[child] = self.hashes[parent]
        self.contents[child] = list(self.contents[parent])

    def free(self, seq: int) -> None:
        self.alloc.free(seq)
        del self.contents[seq], self.hashes[seq]


def run_mixed(work: Workload) -> None:
    work.allocate(0, 80, 120, SYSTEM)
    work.allocate(1, 70, 100, OTHER)
    work.allocate(2, 30, 60)
    work.extend(0, 5)
    work.extend(2, 7)
    work.fork(0, 3)  # parallel sampling: two samples share seq 0's history
    work.fork(0, 4)
    work.extend(3, 3)
    work.extend(4, 1)
    work.extend(0, 2)
    work.free(2)
    work.allocate(5, 40, 64, SYSTEM)
    work.allocate(6, 20, 30)
    work.extend(1, 9)
    work.free(1)
    work.allocate(7, 64, 90, OTHER)  # may reuse seq 1's cached blocks
    work.extend(7, 3)
    work.extend(5, 24)  # finishes the hashed prompt in a second prefill chunk


@pytest.mark.parametrize("name, params", CONFIGS)
def test_slot_mappings_are_disjoint_except_deliberate_sharing(name, params):
    alloc = make_allocator(name, 1024, **params)
    work = Workload(alloc)
    run_mixed(work)
    segments = set(alloc.segments())
    holder: dict[int, tuple] = {}  # slot -> content of the tokens mapped to it
    shared = 0
    for seq, contents in work.contents.items():
        layout = alloc.layout(seq)
        assert alloc.length(seq) == len(contents)
        slots = layout.slot_mapping(0, len(contents))
        per_segment = layout.block_size * layout.blocks_per_segment
        for position, slot in enumerate(slots):
            assert slot // per_segment in segments, f"seq {seq} token {position}: slot {slot}"
            content = contents[position]
            if slot in holder:
                assert holder[slot] == content, f"seq {seq} token {position} clobbers slot {slot}"
                shared += 1
            holder[slot] = content
    if name == "static":
        assert shared == 0
    else:
        assert shared > 0, "forks and the shared system prompt should share slots"
    usage = alloc.usage()
    assert usage.logical == sum(len(c) for c in work.contents.values())
    assert usage.live == len(holder)
