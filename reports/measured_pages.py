"""Pages for the measured GPU tables other than the kernel benchmark: readable tables (the
columns that vary, numbers to four significant digits, constant columns said once above), and
where a table pairs measured with simulated figures of the same slice (`X_measured` beside
`X_simulated`), those pairs side by side as bars. No simulated run of another slice is set
beside a measurement: only the table's own simulated columns are."""
from __future__ import annotations

import textwrap
from typing import Iterator

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.schema import Measurement
from reports.style import new_page, note, run_style

MAX_COLUMNS = 8
MAX_ROWS = 24
MEASURED, SIMULATED = "_measured", "_simulated"


def paired_figures(table: pd.DataFrame) -> list[str]:
    """Names X for which the table has both X_measured and X_simulated numeric columns."""
    return [column[: -len(MEASURED)] for column in table.columns
            if column.endswith(MEASURED) and f"{column[:-len(MEASURED)]}{SIMULATED}" in table
            and pd.api.types.is_numeric_dtype(table[column])]


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def readable(table: pd.DataFrame, keep: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """The table cut to what a page can show: columns that vary (keep first), at most
    MAX_COLUMNS of them; and a line naming the constant and the left-out columns."""
    constant = [c for c in table.columns if table[c].nunique(dropna=False) <= 1 and len(table) > 1]
    varying = [c for c in table.columns if c not in constant]
    order = [c for c in (keep or []) if c in varying] + [c for c in varying if c not in (keep or [])]
    shown = order[:MAX_COLUMNS]
    said = [f"{c} = {_cell(table[c].iloc[0])}" for c in constant]
    left = order[MAX_COLUMNS:]
    text = "; ".join(filter(None, ["every row: " + ", ".join(said) if said else "",
                                   f"not shown: {', '.join(left)}" if left else ""]))
    return table[shown], text


def _draw_table(ax, table: pd.DataFrame) -> None:
    ax.axis("off")
    rows = table.head(MAX_ROWS)
    cells = [[_cell(v) for v in row] for row in rows.itertuples(index=False)]
    if not cells:
        note(ax, "the file has a header but no rows")
        return
    labels = ["\n".join(textwrap.wrap(str(c).replace("_", " "), 12)) for c in rows.columns]
    drawn = ax.table(cellText=cells, colLabels=labels, loc="upper center", cellLoc="right")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1.0, 1.25)
    for (row, _), cell in drawn.get_celld().items():
        if row == 0:
            cell.set_height(cell.get_height() * 2.2)
            cell.set_text_props(fontweight="bold")


def _label_column(table: pd.DataFrame) -> pd.Series:
    """Row labels for bars: the first text column, with a varying integer column beside it."""
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    label = table[text[0]].astype(str) if text else pd.Series(range(len(table))).astype(str)
    ints = [c for c in table.columns if pd.api.types.is_integer_dtype(table[c])
            and table[c].nunique() > 1 and c not in ("requests", "completed")]
    return label + (" " + table[ints[0]].astype(str) if ints and len(ints) < 3 else "")


def _paired_bars(ax, table: pd.DataFrame, name: str) -> None:
    labels = _label_column(table)
    y = np.arange(len(table))[::-1]
    measured = table[f"{name}{MEASURED}"].to_numpy(dtype=float)
    simulated = table[f"{name}{SIMULATED}"].to_numpy(dtype=float)
    ax.barh(y + 0.2, measured, height=0.38, label="measured", **run_style(0).bar())
    ax.barh(y - 0.2, simulated, height=0.38, label="simulated (cost model)",
            **run_style(2).bar())
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, max(np.nanmax(measured), np.nanmax(simulated), 1e-9) * 1.15)
    ax.set(xlabel=name.replace("_", " "), title=f"{name.replace('_', ' ')}: measured vs "
                                                 "simulated")
    ax.legend(loc="lower right", fontsize=8)


def measured_page(measurement: Measurement) -> Figure:
    """One measured table: the readable table, and its measured-vs-simulated pairs as bars."""
    table = measurement.table
    pairs = paired_figures(table)[:2]
    context = "; ".join(f"{key}: {value}" for key, value in measurement.header.items()
                        if key not in ("device", "date", "torch", "triton", "command"))
    keep = [c for name in pairs for c in (f"{name}{MEASURED}", f"{name}{SIMULATED}")]
    shown, left_out = readable(table, keep=[table.columns[0], *keep])
    rows = (f"First {MAX_ROWS} of {len(table)} rows. " if len(table) > MAX_ROWS else "")
    fig = new_page(f"Measured on GPU: {measurement.path.stem}",
                   f"{measurement.device}, {measurement.date} ({measurement.path.name}). "
                   + (f"{context}. " if context else "") + rows + left_out)
    if not pairs:
        _draw_table(fig.add_axes((0.04, 0.06, 0.92, 0.78)), shown)
        return fig
    _draw_table(fig.add_axes((0.04, 0.45, 0.92, 0.4)), shown)
    for index, name in enumerate(pairs):
        ax = fig.add_axes((0.12 + 0.45 * index, 0.07, 0.33, 0.3))
        _paired_bars(ax, table, name)
    return fig


def measured_pages(others: list[Measurement]) -> Iterator[Figure]:
    """A page per table, each drawn when the one before has been written (there are tens)."""
    for measurement in others:
        yield measured_page(measurement)
