"""A GPU run: the garbage collector stays off while it replays (harness/gpu/run.py)."""
from __future__ import annotations

import gc

import pytest

pytest.importorskip("torch")

from harness.gpu import run as gpu_run  # noqa: E402
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402


def test_the_collector_is_off_during_a_run_and_back_after_it(monkeypatch, tiny_decoder,
                                                            small_trace):
    # What a full collection leaves frozen without any run: none on the development machine's
    # CPython 3.11, a few hundred objects on the H200 machine's 3.12 (it did after a bare
    # unfreeze and collect too). The run must leave the same, not the objects it froze.
    gc.unfreeze()
    gc.collect()
    unfrozen = gc.get_freeze_count()
    seen = []

    def simulate(config, trace, **kwargs):
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        raise RuntimeError("the run fails")

    monkeypatch.setattr(gpu_run, "simulate", simulate)
    config = RunConfig(model=model_preset("tiny"), allocator=AllocatorConfig.of("paged"),
                       scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=48))
    with pytest.raises(RuntimeError, match="the run fails"):
        gpu_run.run_on_device(config, small_trace, tiny_decoder)
    [(enabled, frozen)] = seen
    assert not enabled and frozen > unfrozen + 1000  # the weights, modules, libraries
    assert gc.isenabled() and gc.get_freeze_count() == unfrozen
