"""The host-tier pages of a sweep whose grid varies cpu_cache_bytes (the CPU tier of the prefix
cache; examples/sweeps/cpu_tier.toml): per allocator and tier size, where the admitted prompt
tokens were found (GPU prefix cache, host tier, neither), TTFT p50 and p99, and the bytes copied
over PCIe each way; then a paragraph that reads the numbers.

A run with a tier has these figures in its summary. A run without one has no per-tier keys: all
its prefix hits are GPU hits, and its admitted prompt tokens are read from its requests table.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.load import NO_FACTS, AllocatorFacts
from reports.schema import CELLS_DIR, REQUESTS_FILE, read_table
from reports.style import PLOT_AREA, new_page, run_style
from reports.textpage import mono, para, text_pages
from reports.units import pct, seconds

TIER_AXIS = "cpu_cache_bytes"
SHARES = (("gpu", "GPU prefix cache"), ("host", "host tier"), ("miss", "prefilled"))


def admitted_prompt_tokens(requests: pd.DataFrame) -> int:
    return int(requests.loc[requests["admit_s"].notna(), "prompt_tokens"].sum())


def tier_rows(table: pd.DataFrame, sweep_dir: str | Path) -> pd.DataFrame:
    """One row per ok cell: allocator, tier size (GiB), the shares of admitted prompt tokens by
    where they were found, TTFT p50/p99 (s), PCIe GB to the host tier and back."""
    rows = []
    for cell in table.to_dict("records"):
        offload, restore = cell.get("host_offload_bytes"), cell.get("host_restore_bytes")
        if _number(cell.get("prefix_hit_rate_host")):
            gpu, host = cell["prefix_hit_rate_gpu"], cell["prefix_hit_rate_host"]
            miss = cell["prefix_miss_rate"]
        else:  # no tier: every hit was on the GPU
            requests = read_table(Path(sweep_dir) / CELLS_DIR / cell["config_hash"]
                                  / REQUESTS_FILE)
            prompt = admitted_prompt_tokens(requests)
            gpu = cell["prefix_hit_tokens"] / prompt if prompt else math.nan
            host, miss, offload, restore = 0.0, 1.0 - gpu, 0.0, 0.0
        rows.append({
            "allocator": cell["allocator"], "tier_gib": cell.get(TIER_AXIS, 0) / 2**30,
            "gpu": gpu, "host": host, "miss": miss,
            "ttft_p50_s": cell["ttft_p50_s"], "ttft_p99_s": cell["ttft_p99_s"],
            "offload_gb": offload / 1e9, "restore_gb": restore / 1e9,
        })
    return pd.DataFrame(rows).sort_values(["allocator", "tier_gib"], kind="stable")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def table_text(rows: pd.DataFrame) -> str:
    header = ("allocator", "tier", "GPU hit", "host hit", "miss", "TTFT p50", "TTFT p99",
              "PCIe to host", "PCIe back")
    lines = [header] + [(
        r.allocator, f"{r.tier_gib:g} GiB", pct(r.gpu, 1), pct(r.host, 1), pct(r.miss, 1),
        seconds(r.ttft_p50_s), seconds(r.ttft_p99_s), f"{r.offload_gb:,.0f} GB",
        f"{r.restore_gb:,.0f} GB") for r in rows.itertuples()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w)
                      in enumerate(zip(line, widths))) for line in lines]
    return "\n".join([text[0], "-" * len(text[0]), *text[1:]])


def takeaway(rows: pd.DataFrame) -> str:
    """One paragraph from the numbers: what the largest tier adds to the GPU cache's hits and
    does to TTFT, the PCIe traffic it costs, the smallest tier that pays, how allocators differ."""
    first = rows["allocator"].iloc[0]
    own = rows[rows["allocator"] == first]
    off, top = own.iloc[0], own.iloc[-1]
    if top.tier_gib == 0:
        return "No run had a host tier: there is nothing to compare."
    text = (f"{first}: without a host tier the GPU prefix cache finds {pct(off.gpu, 1)} of the "
            f"admitted prompt tokens. A {top.tier_gib:g} GiB host tier finds another "
            f"{pct(top.host, 1)} ({pct(top.gpu + top.host, 1)} in all), and TTFT p50 goes from "
            f"{seconds(off.ttft_p50_s)} to {seconds(top.ttft_p50_s)} (p99 "
            f"{seconds(off.ttft_p99_s)} to {seconds(top.ttft_p99_s)}). Every block evicted from "
            f"the GPU is copied out, so it moves {top.offload_gb:,.0f} GB to the host for "
            f"{top.restore_gb:,.0f} GB brought back over PCIe.")
    paying = own[(own.tier_gib > 0) & (own.ttft_p50_s < off.ttft_p50_s)]
    losing = own[(own.tier_gib > 0) & (own.ttft_p50_s > off.ttft_p50_s)]
    if len(losing):
        worst = losing.iloc[0]
        text += (f" At {worst.tier_gib:g} GiB its hits ({pct(worst.host, 1)}) do not pay for "
                 f"that traffic: TTFT p50 {seconds(worst.ttft_p50_s)}.")
    text += (f" The smallest tier that lowers TTFT p50 is {paying.tier_gib.iloc[0]:g} GiB."
             if len(paying) else " No tier size lowers TTFT p50.")
    largest = rows[rows.tier_gib == top.tier_gib]
    if largest["allocator"].nunique() > 1:
        spread = largest["host"].max() - largest["host"].min()
        text += (f" At {top.tier_gib:g} GiB the allocators' host-hit shares lie within "
                 f"{spread * 100:.1f} points of each other.")
    return text


def host_tier_pages(table: pd.DataFrame, sweep_dir: str | Path, name: str,
                    facts: AllocatorFacts = NO_FACTS) -> list[Figure]:
    """The sweep's host-tier figure and its table with the takeaway."""
    rows = tier_rows(table, sweep_dir)
    rows["_rank"] = rows["allocator"].map(facts.rank)
    rows = rows.sort_values(["_rank", "allocator", "tier_gib"], kind="stable").drop(
        columns="_rank").reset_index(drop=True)
    title = f"Sweep {name}: the prefix cache's host tier"
    return [_shares_figure(rows, title),
            *text_pages(f"{title}, in numbers", [mono(table_text(rows)), para(takeaway(rows))],
                        "Shares of the prompt tokens of admitted requests, by where their KV "
                        "was found; PCIe: bytes copied to the host tier and back, priced in the "
                        "step that makes them at the GPU's PCIe bandwidth (not overlapped).")]


def _shares_figure(rows: pd.DataFrame, title: str) -> Figure:
    fig = new_page(title, "Where the admitted prompt tokens' KV came from (left) and TTFT p50 "
                   "(right), per allocator and host-tier size.")
    bottom, top = PLOT_AREA["bottom"], PLOT_AREA["top"]
    left = fig.add_axes([0.2, bottom, 0.3, top - bottom])
    right = fig.add_axes([0.6, bottom, 0.3, top - bottom])
    labels = [f"{r.allocator} {r.tier_gib:g} GiB" for r in rows.itertuples()]
    positions = np.arange(len(rows))[::-1]
    start = np.zeros(len(rows))
    for index, (key, label) in enumerate(SHARES):
        values = rows[key].to_numpy(dtype=float) * 100
        left.barh(positions, values, left=start, label=label, **run_style(index).bar())
        start += values
    left.set_yticks(positions, labels)
    left.set_xlim(0, 100)
    left.set_xlabel("% of admitted prompt tokens")
    left.legend(loc="lower right", fontsize=8)
    sizes = sorted(rows["tier_gib"].unique())  # evenly spaced: sizes grow by factors
    for index, (allocator, group) in enumerate(rows.groupby("allocator", sort=False)):
        right.plot(group["tier_gib"].map(sizes.index), group["ttft_p50_s"], label=allocator,
                   **run_style(index).line())
    right.set_xticks(range(len(sizes)), [f"{size:g}" for size in sizes])
    right.set_xlabel("host tier (GiB)")
    right.set_ylabel("TTFT p50 (s)")
    right.legend(fontsize=8)
    return fig
