"""The sliding-window pages: pairs of runs with and without a window, figures and takeaway."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from reports.load import Run, load_run
from reports.units import pct
from reports.window import held_per_request, pair_runs, takeaway, window_pages

WINDOW = 64


def _run(steps: pd.DataFrame, config: dict | None = None) -> Run:
    return Run(path=None, steps=steps, requests=pd.DataFrame(), meta={"config": config or {}})


def test_held_per_request_weighs_steps_by_their_time_and_skips_idle_ones():
    steps = pd.DataFrame({"step_ms": [1.0, 3.0, 5.0], "running": [1, 2, 0],
                          "live": [10, 40, 0], "stale": [2, 0, 0], "reserved": [4, 0, 0],
                          "internal": [4, 0, 9]})
    # 20 slots for one request over 1 ms, 20 per request over 3 ms; the idle step is skipped
    assert held_per_request(_run(steps)) == pytest.approx(20.0)


@pytest.fixture(scope="module")
def window_runs(tmp_path_factory):
    """Every allocator on one long-output trace, with and without a window (real runs)."""
    from harness.engine.loop import simulate
    from harness.engine.recorder import write_run
    from harness.model.config import AllocatorConfig, RunConfig
    from harness.model.presets import model_preset
    from workloads.trace import make_trace

    rng = np.random.default_rng(2)
    trace = make_trace(arrival_s=np.sort(rng.uniform(0, 2, 30)),
                       prompt_tokens=rng.integers(50, 400, 30),
                       output_tokens=rng.integers(200, 600, 30), n=np.ones(30, np.int64),
                       prefix_hashes=None,
                       failed=np.zeros(30, bool),
                       attrs={"name": "long", "source": "test", "format": "synthetic"})
    out = tmp_path_factory.mktemp("window")
    dirs = []
    for window in (WINDOW, None):
        model = dataclasses.replace(model_preset("mistral-7b"), sliding_window=window)
        for name, params in (("static", {"max_model_len": 1024}), ("paged", {}),
                             ("segmented", {"segment_tokens": 1024}), ("hybrid", {})):
            config = RunConfig(model=model, allocator=AllocatorConfig.of(name, **params),
                               budget_slots_override=6144)
            dirs.append(write_run(simulate(config, trace), out / f"{window}-{name}"))
    return [load_run(d) for d in dirs]


def test_pairs_join_each_allocators_window_run_to_its_full_one(window_runs, facts):
    pairs = pair_runs(window_runs, facts)
    assert [p.label for p in pairs] == ["static", "paged", "segmented", "hybrid"]
    assert all(p.window == WINDOW and p.full.allocator == p.windowed.allocator for p in pairs)
    with pytest.raises(ValueError, match="no run of paged with full attention"):
        pair_runs([p.windowed for p in pairs if p.label == "paged"], facts)


def test_the_window_frees_memory_of_every_allocator_but_static(window_runs, facts):
    pairs = {p.label: p for p in pair_runs(window_runs, facts)}
    assert pairs["static"].freed() == pytest.approx(0.0)
    for label in ("paged", "segmented", "hybrid"):
        assert pairs[label].freed() > 0.5
        # The full runs press memory: the window runs more requests at once.
        assert pairs[label].ratio("mean_running") > 1 and pairs[label].ratio("peak_running") > 1


def test_the_takeaway_says_what_each_allocator_did(window_runs, facts):
    pairs = pair_runs(window_runs, facts)
    text = takeaway(pairs, "long")
    freed = sorted(pct(p.freed()) for p in pairs[1:])
    assert f"let go of {freed[0]}" in text and freed[-1] in text
    static = pairs[0]
    assert f"Static releases nothing of its reservation (1,024 tokens per request): " \
           f"{pct(static.windowed.figure('waste_stale'))}" in text
    assert f"{WINDOW}-token sliding window" in text
    assert takeaway([], "long").startswith("No allocator")


def test_the_pages_are_the_takeaway_the_bars_and_the_waste(window_runs, facts):
    from matplotlib import pyplot as plt

    pages = window_pages(pair_runs(window_runs, facts), "long")
    titles = [fig.get_suptitle() for fig in pages]
    assert titles == ["long: what a sliding window frees, per allocator",
                      "long: KV per request, concurrency and throughput, with and without the "
                      "window",
                      "long with and without the window: where the backed KV memory goes"]
    for fig in pages:
        plt.close(fig)
