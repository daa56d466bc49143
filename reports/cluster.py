"""The cluster page: routers compared (prefix-hit rate, TTFT, goodput under the SLO, load
imbalance) and the fewest replicas that serve each trace under the SLO, per allocator.

It reads run.json and the request table of each run directory (not the steps, which are long for
a cluster run). A run without a replica count in its config ran on one replica. A replica count
serves a trace when every request completed and the p99 TTFT is within the SLO; the smallest
such count is only claimed where the runs include the count just below it (as the search of
`kvharness simulate --find-replicas` writes them), otherwise the page says "at most N".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from matplotlib.figure import Figure

from reports.schema import CLUSTER_JSON_KEY, REQUESTS_FILE, RUN_JSON, read_table
from reports.textpage import Block, heading, mono, para, text_pages


@dataclass(frozen=True)
class ClusterRun:
    """The figures of one run that the page compares."""

    trace: str
    allocator: str
    router: str
    replicas: int
    requests: int
    completed: int
    ttft_p99_s: float
    prefix_hit_rate: float
    load_imbalance: float
    goodput_req_s: float  # requests completed with TTFT within the SLO, per simulated second


def is_cluster_run(run_dir: str | Path) -> bool:
    """Whether a run directory holds a run of several replicas."""
    path = Path(run_dir) / RUN_JSON
    try:
        return CLUSTER_JSON_KEY in json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # not a run of ours: the loader says what is wrong with it


def read_cluster_run(run_dir: str | Path, slo_ttft_s: float) -> ClusterRun:
    meta: dict[str, Any] = json.loads((Path(run_dir) / RUN_JSON).read_text())
    config, summary = meta.get("config") or {}, meta.get("summary") or {}
    requests = read_table(Path(run_dir) / REQUESTS_FILE)[
        ["status", "prompt_tokens", "admit_s", "prefix_hit_tokens", "ttft_s"]]
    good = ((requests["status"] == "completed") & (requests["ttft_s"] <= slo_ttft_s)).sum()
    admitted = requests["admit_s"].notna()
    prompt = requests.loc[admitted, "prompt_tokens"].sum()
    sim_s = float(summary.get("sim_time_s") or float("nan"))
    allocator = config.get("allocator") or {}
    return ClusterRun(
        trace=str((meta.get("trace") or {}).get("name") or "unnamed trace"),
        allocator=str(allocator.get("name", "unknown") if isinstance(allocator, dict)
                      else allocator),
        router=str(config.get("router", "round-robin")),
        replicas=int(config.get("replicas", 1)),
        requests=len(requests),
        completed=int((requests["status"] == "completed").sum()),
        ttft_p99_s=float(summary.get("ttft_p99_s") or float("nan")),
        prefix_hit_rate=float(requests["prefix_hit_tokens"].sum() / prompt) if prompt
        else float("nan"),
        load_imbalance=float(summary.get("load_imbalance") or 1.0),
        goodput_req_s=float(good / sim_s) if sim_s > 0 else float("nan"),
    )


def serves(run: ClusterRun, slo_ttft_s: float) -> bool:
    return run.completed == run.requests and run.ttft_p99_s <= slo_ttft_s


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def router_blocks(runs: list[ClusterRun], slo_ttft_s: float) -> list[Block]:
    """One table per trace, allocator and replica count that has cluster runs."""
    blocks: list[Block] = []
    groups: dict[tuple, list[ClusterRun]] = {}
    for run in runs:
        if run.replicas > 1:
            groups.setdefault((run.trace, run.allocator, run.replicas), []).append(run)
    for (trace, allocator, replicas), group in sorted(groups.items()):
        rows = [("router", "prefix hits", "TTFT p99", f"goodput (TTFT<={slo_ttft_s:g}s)",
                 "imbalance", "completed")]
        for run in sorted(group, key=lambda r: r.router):
            rows.append((run.router, f"{run.prefix_hit_rate:.1%}", f"{run.ttft_p99_s:.2f} s",
                         f"{run.goodput_req_s:.2f} req/s", f"{run.load_imbalance:.2f}x",
                         f"{run.completed}/{run.requests}"))
        blocks += [heading(f"{trace}: {allocator} on {replicas} replicas"), mono(_table(rows))]
    return blocks


def replica_blocks(runs: list[ClusterRun], slo_ttft_s: float) -> list[Block]:
    """Per trace: for each allocator and router, the fewest replicas that serve."""
    groups: dict[tuple, dict[int, ClusterRun]] = {}
    for run in runs:
        groups.setdefault((run.trace, run.allocator, run.router), {})[run.replicas] = run
    rows = [("trace", "allocator", "router", "replicas needed", "tried")]
    for (trace, allocator, router), by_count in sorted(groups.items()):
        if len(by_count) < 2:
            continue  # one count alone is a run, not a search
        passing = sorted(n for n, run in by_count.items() if serves(run, slo_ttft_s))
        if not passing:
            answer = f"more than {max(by_count)}"
        elif passing[0] == 1 or (passing[0] - 1) in by_count:
            answer = str(passing[0])
        else:
            answer = f"at most {passing[0]}"
        rows.append((trace, allocator, router, answer, ", ".join(map(str, sorted(by_count)))))
    if len(rows) == 1:
        return []
    return [heading(f"Fewest replicas serving each trace at its recorded rate "
                    f"(every request completed, p99 TTFT <= {slo_ttft_s:g} s)"),
            mono(_table(rows))]


def cluster_pages(run_dirs: Iterable[str | Path], slo_ttft_s: float) -> list[Figure]:
    """The page(s), or none when no run had several replicas."""
    run_dirs = list(run_dirs)
    if not any(is_cluster_run(d) for d in run_dirs):
        return []
    runs = [read_cluster_run(d, slo_ttft_s) for d in run_dirs]
    blocks = router_blocks(runs, slo_ttft_s) + replica_blocks(runs, slo_ttft_s)
    blocks.insert(0, para("Prefix hits: prompt tokens found in a replica's prefix cache over the "
                          "prompt tokens of admitted requests. Imbalance: the busiest replica's "
                          "busy time over the mean. Goodput: requests completed within the TTFT "
                          "SLO per simulated second."))
    return text_pages("Replicas behind a router", blocks,
                      "Cluster runs of `kvharness simulate --replicas N --router R`.")
