"""The seed comparison "PagedAttention v1 against v2": one decode pass per (sequence, KV head)
(num_splits = 1) against split-KV with a reduce, each as a ratio to SDPA on a contiguous cache,
from a measured results file with columns SPLITS_COLUMNS (benchmarks/bench_prefill.py writes
decode_splits_<gpu>.csv)."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from reports.schema import Measurement
from reports.style import new_page, run_style

SPLITS_COLUMNS = ("batch", "context", "impl", "num_splits", "median_us", "ratio_to_sdpa")
IMPLS = (("paged_v1", "v1 (one pass)"), ("paged_v2", "v2 (split-KV)"))


def is_splits(measurement: Measurement) -> bool:
    return all(column in measurement.table.columns for column in SPLITS_COLUMNS)


def splits_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (batch, context): the ratio to SDPA of v1 and of v2 (above 1: faster than SDPA),
    v2's split count and v2's speedup over v1."""
    wide = table.pivot_table(index=["batch", "context"], columns="impl",
                             values=["ratio_to_sdpa", "num_splits"], aggfunc="median")
    out = pd.DataFrame({
        "v1_ratio": wide["ratio_to_sdpa"]["paged_v1"],
        "v2_ratio": wide["ratio_to_sdpa"]["paged_v2"],
        "v2_splits": wide["num_splits"]["paged_v2"].astype(int),
    })
    out["v2_over_v1"] = out["v2_ratio"] / out["v1_ratio"]
    return out.reset_index()


def splits_page(measurement: Measurement) -> Figure:
    table = measurement.table
    fig = new_page(f"PagedAttention v1 against v2: {measurement.device}",
                   f"Measured {measurement.date} ({measurement.path.name}); decode time of SDPA "
                   "on a contiguous cache over each kernel's time (above 1: faster than SDPA).")
    plot, cells = fig.subplots(1, 2, gridspec_kw={"top": 0.86, "wspace": 0.15,
                                                  "width_ratios": [3, 2]})
    for b_index, (batch, rows) in enumerate(table.groupby("batch")):
        style = run_style(b_index).line()
        for impl, label in IMPLS:
            line = rows[rows["impl"] == impl].sort_values("context")
            plot.plot(line["context"], line["ratio_to_sdpa"], label=f"batch {batch}, {label}",
                      **{**style, "linestyle": "-" if impl == "paged_v2" else ":"})
    plot.axhline(1.0, color="0.3", linewidth=1, linestyle=(0, (4, 2)), label="SDPA")
    plot.set_xscale("log", base=2)
    plot.set(xlabel="context (tokens)", ylabel="SDPA time / kernel time",
             title="ratio to SDPA by context; solid: v2, dotted: v1")
    plot.legend(loc="best", fontsize=7)
    summary = splits_table(table)
    cells.axis("off")
    shown = summary.rename(columns={"v2_over_v1": "v2/v1"})
    text = [[str(r.batch), str(r.context), f"{r.v1_ratio:.2f}", f"{r.v2_ratio:.2f}",
             str(r.v2_splits), f"{r[5]:.1f}"] for r in shown.itertuples(index=False)]
    grid = cells.table(cellText=text, colLabels=["batch", "context", "v1", "v2", "splits",
                                                 "v2/v1"], loc="upper center")
    grid.auto_set_font_size(False)
    grid.set_fontsize(7)
    return fig
