"""The cluster page: routers side by side, and the fewest replicas a search found."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from harness.cluster.capacity import smallest_replicas
from harness.cluster.run import simulate
from harness.engine.recorder import write_run
from harness.model.config import AllocatorConfig, RunConfig
from reports.build import build_report
from reports.cluster import cluster_pages, read_cluster_run, replica_blocks, router_blocks
from workloads.trace import make_trace

pypdf = pytest.importorskip("pypdf")


def _trace(rows=40):
    rng = np.random.default_rng(3)
    return make_trace(
        arrival_s=np.sort(rng.uniform(0, 2, rows)), prompt_tokens=rng.integers(100, 1500, rows),
        output_tokens=rng.integers(1, 60, rows), n=np.ones(rows, dtype=np.int64),
        prefix_hashes=[(i % 5, i % 7) for i in range(rows)], failed=np.zeros(rows, dtype=bool),
        attrs={"name": "toy", "source": "tests", "format": "synthetic", "chunk_tokens": 64})


@pytest.fixture(scope="module")
def cluster_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    base = RunConfig(allocator=AllocatorConfig("paged"), budget_slots_override=16384)
    dirs = []
    for router in ("round-robin", "prefix-aware"):
        out = root / router
        write_run(simulate(dataclasses.replace(base, replicas=2, router=router), _trace()), out)
        dirs.append(out)
    search = smallest_replicas(base, _trace(), slo_ttft_s=0.3, max_replicas=8,
                               on_run=lambda n, r: write_run(r, root / "search" / f"r{n}"))
    dirs += sorted((root / "search").iterdir())
    return dirs, search.replicas


def test_the_page_compares_routers_and_names_the_replicas_needed(cluster_dirs):
    dirs, needed = cluster_dirs
    runs = [read_cluster_run(d, 0.3) for d in dirs]
    routers = " ".join(block.text for block in router_blocks(runs, 0.3))
    assert "round-robin" in routers and "prefix-aware" in routers
    table = replica_blocks(runs, 0.3)[-1].text
    assert needed is not None
    assert re.search(rf"toy\s+paged\s+round-robin\s+{needed}\s", table)


def test_the_report_gets_a_cluster_page(cluster_dirs, tmp_path):
    dirs, _ = cluster_dirs
    titles = build_report(dirs, tmp_path / "r.pdf", slo_ttft_s=0.3)
    assert "Replicas behind a router" in titles
    assert cluster_pages([], 0.3) == []
