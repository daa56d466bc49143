"""The step bins' companion: step time across allocators over the steps they all ran alike."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from gpu_steps import SAME_BATCH, same_batch_notes  # noqa: E402


def _log(steps: list[tuple[int, int, float]]) -> pd.DataFrame:
    """(decode rows, prefill tokens, seconds) per step; every other count zero."""
    frame = pd.DataFrame(0, index=range(len(steps)), columns=list(SAME_BATCH))
    frame["decode_seqs"] = [d for d, _, _ in steps]
    frame["prefill_tokens"] = [p for _, p, _ in steps]
    frame["prefill_seqs"] = [int(p > 0) for _, p, _ in steps]
    frame["step_s"] = [s for _, _, s in steps]
    return frame


def test_only_batches_every_allocator_ran_are_compared():
    logs = {
        # Batch (4, 0) twice for paged: its median, 1.0, is what counts.
        "paged": _log([(4, 0, 0.9), (4, 0, 1.1), (8, 0, 2.0), (2, 100, 5.0), (3, 0, 9.0)]),
        "segmented": _log([(4, 0, 1.04), (8, 0, 2.2), (2, 100, 5.5)]),
        "static": _log([(4, 0, 1.2), (8, 0, 2.0), (2, 100, 5.0), (16, 0, 1.0)]),
    }
    decode, mixed = same_batch_notes(logs)
    # Decode batches (4, 0) and (8, 0): spreads 20% and 10% over all three, 4% and 10% without
    # static; (3, 0) and (16, 0) are not everyone's.
    assert decode == ("same batch, decode: 2 batches every allocator ran; spread every "
                      "allocator median 15.0%, largest 20.0%; all but static median 7.0%, "
                      "largest 10.0%")
    assert mixed.startswith("same batch, mixed: 1 batches") and "largest 10.0%" in mixed


def test_one_allocator_or_no_shared_batch_gives_no_note():
    assert same_batch_notes({"paged": _log([(4, 0, 1.0)])}) == []
    assert same_batch_notes({"paged": _log([(4, 0, 1.0)]),
                             "hybrid": _log([(5, 0, 1.0)])}) == []


def test_host_notes_break_the_slowest_steps_down():
    """The steps at the 99th percentile of host preparation and over, by part: planning,
    staging, the rest, and the time the thread was off its core; the CPU time beside the wall
    time."""
    from gpu_steps import host_notes

    fast = [dict(host_prep_s=0.0003, host_prep_cpu_s=0.0003, plan_s=0.0001, stage_s=0.0001,
                 graph=True, decode_seqs=8, prefill_tokens=0, enqueue_s=0.0001,
                 step_s=0.005)] * 99
    slow = [dict(host_prep_s=0.0012, host_prep_cpu_s=0.0005, plan_s=0.0006, stage_s=0.0004,
                 graph=False, decode_seqs=200, prefill_tokens=8000, enqueue_s=0.02, step_s=0.2)]
    note = host_notes("segmented", pd.DataFrame(fast + slow))
    assert note.startswith("segmented: host prep per step median 0.300 ms")
    assert "its CPU time median 0.300 ms, p99 0.302 ms, max 0.500 ms" in note
    assert ("the 1 steps at p99 and over: median plan 0.600 ms, stage 0.400 ms, rest 0.200 ms, "
            "off core 0.700 ms, 200 decode rows, 8000 prefill tokens, 0% graphed") in note
