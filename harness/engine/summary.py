"""The summary of a run: the figures run.json carries, from the steps and requests tables.

Means and percentiles over steps weight each step by its duration (a long prefill step counts
for its time, not as one row). Waste shares split every backed slot into live, reserved,
internal, cached, stale (held, but behind every sliding window that holds it), external (free
but outside the largest free run) and free (the largest run).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports.schema import HOST_HIT_COLUMN, HOST_TIER_STEP_COLUMNS, HOST_TIER_SUMMARY_KEYS


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches q of the total (NaN when empty)."""
    if len(values) == 0 or weights.sum() <= 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1])])


def _percentile(values: pd.Series, q: float) -> float:
    values = values.dropna().to_numpy()
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarize(
    steps: pd.DataFrame,
    requests: pd.DataFrame,
    *,
    budget_slots: int,
    bytes_per_token: int,
    output_tokens: int,
    sim_time_s: float,
    capped: dict | None = None,
) -> dict[str, float | int]:
    """The run's figures; capped is the trace's attrs["capped"] when its lengths were cut to
    max_model_len (--truncate), so that the summary says how many requests were cut."""
    capped = capped or {}
    status = requests["status"]
    dt = steps["step_ms"].to_numpy() / 1e3
    total = dt.sum()

    def mean(values: np.ndarray) -> float:
        return float((values * dt).sum() / total) if total > 0 else float("nan")

    backed = steps["backed"].to_numpy(dtype=np.float64)
    safe = np.where(backed > 0, backed, 1.0)

    def share(values) -> float:
        return mean(np.where(backed > 0, np.asarray(values, dtype=np.float64) / safe, 0.0))

    utilization = steps["utilization"].to_numpy()
    completed = requests[status == "completed"]
    summary = {
        "requests": len(requests),
        "completed": int((status == "completed").sum()),
        "rejected": int((status == "rejected").sum()),
        "truncated_prompts": int(capped.get("prompts", 0)),
        "truncated_outputs": int(capped.get("outputs", 0)),
        "queued_at_end": int((status == "queued").sum()),
        "running_at_end": int((status == "running").sum()),
        "budget_slots": int(budget_slots),
        "bytes_per_token": int(bytes_per_token),
        "utilization_mean": mean(utilization),
        "utilization_p50": weighted_quantile(utilization, dt, 0.50),
        "utilization_p99": weighted_quantile(utilization, dt, 0.99),
        "waste_reserved": share(steps["reserved"]),
        "waste_internal": share(steps["internal"]),
        "waste_external": share(steps["free"] - steps["largest_free_run"]),
        "waste_cached": share(steps["cached"]),
        "waste_stale": share(steps["stale"]),
        "waste_free": share(steps["largest_free_run"]),
        "peak_running": int(steps["running"].max()) if len(steps) else 0,
        "mean_running": mean(steps["running"].to_numpy()),
        "peak_backed_bytes": int(backed.max()) * int(bytes_per_token) if len(steps) else 0,
        "throughput_tok_s": output_tokens / sim_time_s if sim_time_s > 0 else float("nan"),
        "output_tokens": int(output_tokens),
        "prefill_tokens": int(steps["prefill_tokens"].sum()),
        "prefix_hit_tokens": int(requests["prefix_hit_tokens"].sum()),
        "ttft_p50_s": _percentile(completed["ttft_s"], 50),
        "ttft_p99_s": _percentile(completed["ttft_s"], 99),
        "tpot_p50_s": _percentile(completed["tpot_s"], 50),
        "tpot_p99_s": _percentile(completed["tpot_s"], 99),
        "e2e_p50_s": _percentile(completed["e2e_s"], 50),
        "e2e_p99_s": _percentile(completed["e2e_s"], 99),
        "preemptions": int(requests["preemptions"].sum()),
        "sim_time_s": float(sim_time_s),
        "mean_step_ms": float(steps["step_ms"].mean()) if len(steps) else float("nan"),
    }
    if HOST_HIT_COLUMN in requests:
        summary.update(host_tier_figures(steps, requests, bytes_per_token))
    return summary


def host_tier_figures(steps: pd.DataFrame, requests: pd.DataFrame,
                      bytes_per_token: int) -> dict[str, float | int]:
    """The HOST_TIER_SUMMARY_KEYS of a run with a host tier: the prompt tokens of admitted
    requests by where they were found, and the PCIe bytes of the tier each way."""
    admitted = requests["admit_s"].notna()
    prompt = int(requests.loc[admitted, "prompt_tokens"].sum())
    hit = int(requests["prefix_hit_tokens"].sum())
    host = int(requests[HOST_HIT_COLUMN].sum())
    miss = prompt - hit

    def rate(tokens: int) -> float:
        return tokens / prompt if prompt else float("nan")

    offload, restore = (int(steps[name].sum()) * int(bytes_per_token)
                        for name in HOST_TIER_STEP_COLUMNS)
    return dict(zip(HOST_TIER_SUMMARY_KEYS, (
        hit - host, host, miss, rate(hit - host), rate(host), rate(miss), offload, restore)))


def comparison_table(summaries: dict[str, dict]) -> str:
    """A Markdown table of runs side by side (name -> summary): memory use, admission, latency."""
    header = (
        "| allocator | utilization | reserved | internal | external | cached | stale | free "
        "| peak running | throughput tok/s | TTFT p50 ms | TTFT p99 ms | preemptions | rejected |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, s in summaries.items():
        lines.append(
            f"| {name} | {s['utilization_mean']:.1%} | {s['waste_reserved']:.1%} "
            f"| {s['waste_internal']:.1%} | {s['waste_external']:.1%} | {s['waste_cached']:.1%} "
            f"| {s['waste_stale']:.1%} | {s['waste_free']:.1%} | {s['peak_running']} "
            f"| {s['throughput_tok_s']:,.0f} "
            f"| {s['ttft_p50_s'] * 1e3:,.1f} | {s['ttft_p99_s'] * 1e3:,.1f} "
            f"| {s['preemptions']} | {s['rejected']} |"
        )
    return "\n".join(lines)
