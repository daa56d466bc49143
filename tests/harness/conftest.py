"""Helpers for the harness tests: small canonical traces and configs with a tiny KV budget."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig
from harness.model.presets import model_preset


def make_trace(
    prompts, outputs, *, arrivals=None, n=None, hashes=None, chunk_tokens=0, name="test",
    beam_width=None, spec_tokens=None, spec_accept=None,
) -> pd.DataFrame:
    """A canonical trace (workloads/trace.py schema) from plain lists."""
    rows = len(prompts)
    arrivals = np.zeros(rows) if arrivals is None else np.asarray(arrivals, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(rows, dtype=np.int64),
            "arrival_s": arrivals,
            "prompt_tokens": np.asarray(prompts, dtype=np.int64),
            "output_tokens": np.asarray(outputs, dtype=np.int64),
            "n": np.asarray(n if n is not None else [1] * rows, dtype=np.int64),
            "prefix_hashes": pd.Series(hashes if hashes is not None else [None] * rows,
                                       dtype=object),
            "failed": np.asarray(outputs) == 0,
            "beam_width": np.asarray(beam_width or [1] * rows, dtype=np.int64),
            "spec_tokens": np.asarray(spec_tokens or [0] * rows, dtype=np.int64),
            "spec_accept": np.asarray(spec_accept or [0.0] * rows, dtype=np.float64),
        }
    )
    frame.attrs.update(
        {"name": name, "source": "tests", "format": "synthetic", "chunk_tokens": chunk_tokens,
         "skipped_rows": []}
    )
    return frame


def random_trace(rng: np.random.Generator, rows: int, *, max_prompt=300, max_output=60,
                 rate_per_s=50.0, max_n=1) -> pd.DataFrame:
    arrivals = np.cumsum(rng.exponential(1 / rate_per_s, rows))
    arrivals -= arrivals[0]
    return make_trace(
        rng.integers(1, max_prompt + 1, rows),
        rng.integers(1, max_output + 1, rows),
        arrivals=arrivals,
        n=rng.integers(1, max_n + 1, rows),
    )


def chained_prefix_trace(seed: int, rows: int, *, chunk_tokens=8, max_output=30) -> pd.DataFrame:
    """Prompts hashed Mooncake's way (a hash per chunk of chunk_tokens tokens, the last chunk
    partial) in two families, each prompt a run of 2-8 of its family's hashes from the first:
    a prompt is a prefix of every longer one of its family. All arrive at once, so that the
    steps do not depend on how long each one takes."""
    rng = np.random.default_rng(seed)
    firsts = [100 * (1 + i % 2) for i in range(rows)]
    hashes = [tuple(range(first, first + rng.integers(2, 9))) for first in firsts]
    prompts = [len(h) * chunk_tokens - rng.integers(0, chunk_tokens) for h in hashes]
    return make_trace(prompts, rng.integers(10, max_output, rows), hashes=hashes,
                      chunk_tokens=chunk_tokens, name=f"chained-{seed}")


def tiny_config(allocator="paged", *, slots=4096, window=None, **sched) -> RunConfig:
    """llama3-8b step times over a small KV budget, so memory pressure is easy to create;
    window: a sliding window of that many tokens in its every layer."""
    params = {"block_size": 16} if allocator in ("paged", "hybrid") else {}
    if allocator == "static":  # a model's whole context would not fit these small budgets
        params["oracle"] = True
    if allocator in ("segmented", "hybrid"):
        params["segment_tokens"] = 1024
    return RunConfig(
        model=dataclasses.replace(model_preset("llama3-8b"), sliding_window=window),
        allocator=AllocatorConfig.of(allocator, **params),
        scheduler=dataclasses.replace(SchedulerConfig(), **sched),
        budget_slots_override=slots,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(name="make_trace")
def _make_trace_fixture():
    return make_trace


@pytest.fixture(name="random_trace")
def _random_trace_fixture():
    return random_trace


@pytest.fixture(name="chained_prefix_trace")
def _chained_prefix_trace_fixture():
    return chained_prefix_trace


@pytest.fixture
def prefill_preemptions(monkeypatch):
    """[count] of the run's preemptions of a request midway through its prefill (some of its
    target computed or found in the prefix cache, the rest not)."""
    from harness.engine.scheduler import Scheduler

    count = [0]
    preempt = Scheduler._preempt

    def counting(self, g, batch):
        count[0] += 0 < g.computed < g.target
        preempt(self, g, batch)

    monkeypatch.setattr(Scheduler, "_preempt", counting)
    return count


@pytest.fixture(name="tiny_config")
def _tiny_config_fixture():
    return tiny_config
