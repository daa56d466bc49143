"""The results of a run: one row per engine step and one row per request, and their files.

Step rows are kept as one flat list of numbers in small chunks turned into float64 arrays: the
Azure trace makes over 400,000 steps, and a tuple of Python numbers per row would take some
300 MB (and numpy reads a flat list of numbers far faster than a list of tuples). The
recorder alone appends rows; the scheduler reports request events to it. An executor that holds
real KV memory (it has `kv_allocated_bytes`) adds a kv_allocated_bytes column, read after each
step; cost-model runs keep exactly the columns of STEP_COLUMNS. A run with a host tier of the
prefix cache adds the HOST_TIER_STEP_COLUMNS and the HOST_HIT_COLUMN of requests (the few steps
that copy to or from the host are kept apart, so that the other rows stay as they are).
"""
from __future__ import annotations

import json
import math
from operator import attrgetter
from pathlib import Path

import numpy as np
import pandas as pd

from allocators import Usage
from harness.engine.batch import Batch
from reports.schema import (
    CLUSTER_JSON_KEY, FLOAT_STEP_COLUMNS, HOST_HIT_COLUMN, HOST_TIER_STEP_COLUMNS, KV_BYTES_COLUMN,
    REQUESTS_FILE, RUN_JSON, STEP_COLUMNS, STEPS_FILE, USAGE_COLUMNS, write_table,
)

_CHUNK_ROWS = 8192
_FIXED = 8  # the figures of a row before the usage figures
_ROW_FIGURES = _FIXED + len(USAGE_COLUMNS)  # the figures row() takes
_usage_figures = attrgetter(*USAGE_COLUMNS)


class Recorder:
    """Collects step rows and request events of one run (requests indexed by request_id)."""

    def __init__(self, trace: pd.DataFrame, executor: object | None = None, *,
                 host_tier: bool = False) -> None:
        self.trace = trace
        self.host_tier = host_tier
        # Device memory the executor's KV pool holds, read after each step (measured runs).
        self._executor = executor if hasattr(executor, KV_BYTES_COLUMN) else None
        self._kv_bytes: list[int] = []
        n = len(trace)
        self.admit_s = [math.nan] * n
        self.first_token_s = [math.nan] * n
        self.finish_s = [math.nan] * n
        self.preemptions = [0] * n
        self.prefix_hit_tokens = [0] * n
        self.host_hit_tokens = [0] * n
        self._host_copy_rows: list[tuple[int, int, int]] = []  # (row, offloaded, restored)
        self.status = [""] * n
        self.reason = [""] * n
        self.num_done = 0  # completed or rejected
        # Preemptions since the last row: they happen while the next step is scheduled, so the
        # row of that step carries them (the step table then shows preemptions over time).
        self._preempted_since_row = 0
        self._chunks: list[np.ndarray] = []
        self._rows: list[float] = []  # the figures of the rows not yet in a chunk, row by row

    # request events, called by the scheduler
    def admitted(self, rid: int, t: float, hit_tokens: int, host_hit_tokens: int) -> None:
        """prefix_hit_tokens are the prompt tokens the cache held at the first admission (of
        them host_hit_tokens on the host tier): a request admitted again after a preemption
        finds its own blocks, which is recompute saved, not reuse, and would count the same
        prompt twice."""
        if math.isnan(self.admit_s[rid]):  # the first admission; later ones follow preemptions
            self.admit_s[rid] = t
            self.prefix_hit_tokens[rid] = hit_tokens
            self.host_hit_tokens[rid] = host_hit_tokens

    def first_token(self, rid: int, t: float) -> None:
        self.first_token_s[rid] = t

    def finished(self, rid: int, t: float) -> None:
        self.finish_s[rid] = t
        self.status[rid] = "completed"
        self.num_done += 1

    def rejected(self, rid: int, reason: str) -> None:
        self.status[rid] = "rejected"
        self.reason[rid] = reason
        self.num_done += 1

    def preempted(self, rid: int) -> None:
        self.preemptions[rid] += 1
        self._preempted_since_row += 1

    def step(
        self, time_s: float, step_s: float, running: int, waiting: int, swapped: int,
        batch: Batch, usage: Usage,
    ) -> None:
        if batch.host_offload_tokens or batch.host_restore_tokens:
            row = len(self._chunks) * _CHUNK_ROWS + len(self._rows) // _ROW_FIGURES
            self._host_copy_rows.append(
                (row, batch.host_offload_tokens, batch.host_restore_tokens))
        self.row(time_s, step_s, running, waiting, swapped, batch.prefill_tokens,
                 batch.decode_tokens, usage)

    def row(
        self, time_s: float, step_s: float, running: int, waiting: int, swapped: int,
        prefill_tokens: int, decode_tokens: int, usage: Usage,
    ) -> None:
        """One step: when it started, how long it took, the queues, its tokens, the KV usage."""
        if self._executor is not None:
            self._kv_bytes.append(self._executor.kv_allocated_bytes)
        rows = self._rows
        rows += (time_s, step_s, running, waiting, swapped, prefill_tokens, decode_tokens,
                 self._preempted_since_row)
        rows += _usage_figures(usage)
        self._preempted_since_row = 0
        if len(rows) == _CHUNK_ROWS * _ROW_FIGURES:
            self._chunks.append(self._chunk())
            rows.clear()

    def _chunk(self) -> np.ndarray:
        return np.array(self._rows, dtype=np.float64).reshape(-1, _ROW_FIGURES)

    @property
    def peak_kv_allocated_bytes(self) -> int | None:
        """The most device KV memory held after a step; None when the executor holds none."""
        return max(self._kv_bytes, default=0) if self._executor is not None else None

    def steps_frame(self) -> pd.DataFrame:
        """The steps table with the columns of STEP_COLUMNS (and kv_allocated_bytes when the
        executor has it)."""
        chunks = self._chunks + ([self._chunk()] if self._rows else [])
        data = np.concatenate(chunks) if chunks else np.zeros((0, _ROW_FIGURES))
        t, step_s, running, waiting, swapped, prefill, decode, preempted = data[:, :_FIXED].T
        columns = {
            "step": np.arange(len(data), dtype=np.int64),
            "time_s": t,
            "step_ms": step_s * 1e3,
            "running": running,
            "waiting": waiting,
            "swapped": swapped,
            "batch_tokens": prefill + decode,
            "prefill_tokens": prefill,
            "decode_tokens": decode,
            "preempted": preempted,
        }
        columns.update(zip(USAGE_COLUMNS, data[:, _FIXED:].T))
        frame = pd.DataFrame(columns)
        ints = [c for c in STEP_COLUMNS if c not in FLOAT_STEP_COLUMNS]
        frame = frame.astype({c: np.int64 for c in ints})
        if self.host_tier:
            copied = np.zeros((len(data), len(HOST_TIER_STEP_COLUMNS)), dtype=np.int64)
            if self._host_copy_rows:
                rows = np.asarray(self._host_copy_rows, dtype=np.int64)
                copied[rows[:, 0]] = rows[:, 1:]
            for index, name in enumerate(HOST_TIER_STEP_COLUMNS):
                frame[name] = copied[:, index]
        if self._executor is not None:
            frame[KV_BYTES_COLUMN] = np.asarray(self._kv_bytes, dtype=np.int64)
        return frame

    def requests_frame(self, end_status: dict[int, str]) -> pd.DataFrame:
        """The requests table; end_status gives "queued" / "running" for unfinished requests."""
        trace = self.trace
        status = [s or end_status.get(rid, "queued") for rid, s in enumerate(self.status)]
        arrival = trace["arrival_s"].to_numpy(dtype=np.float64)
        first = np.array(self.first_token_s)
        finish = np.array(self.finish_s)
        completed = np.array(status) == "completed"
        output = trace["output_tokens"].to_numpy(dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(completed & (output > 1), (finish - first) / (output - 1), np.nan)
        frame = pd.DataFrame(
            {
                "request_id": trace["request_id"].to_numpy(dtype=np.int64),
                "arrival_s": arrival,
                "prompt_tokens": trace["prompt_tokens"].to_numpy(dtype=np.int64),
                "output_tokens": output,
                "n": trace["n"].to_numpy(dtype=np.int64),
                "status": status,
                "reason": self.reason,
                "admit_s": np.array(self.admit_s),
                "first_token_s": first,
                "finish_s": finish,
                "ttft_s": first - arrival,
                "tpot_s": tpot,
                "e2e_s": np.where(completed, finish - arrival, np.nan),
                "preemptions": np.array(self.preemptions, dtype=np.int64),
                "prefix_hit_tokens": np.array(self.prefix_hit_tokens, dtype=np.int64),
            }
        )
        if self.host_tier:
            frame[HOST_HIT_COLUMN] = np.array(self.host_hit_tokens, dtype=np.int64)
        return frame


def write_tables(out_dir: Path, steps: pd.DataFrame, requests: pd.DataFrame) -> None:
    """The steps and requests tables in the schema's file format (NaN stays NaN)."""
    for name, frame in ((STEPS_FILE, steps), (REQUESTS_FILE, requests)):
        write_table(frame, out_dir / name)


def write_json(path: Path, data: dict) -> None:
    """JSON with NaN written as null, keys in insertion order, a final newline."""
    with open(path, "w") as fh:
        json.dump(_jsonable(data), fh, indent=2, allow_nan=False)
        fh.write("\n")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


def versions() -> dict[str, str]:
    """Versions of what shaped the numbers (no timestamps: results files stay reproducible)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("kvharness", "numpy", "pandas", "simpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def write_run(result, out_dir: str | Path) -> Path:
    """Write a RunResult as the schema's steps and requests tables and run.json into out_dir
    (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(out, result.steps, result.requests)
    info = result.info
    write_json(
        out / RUN_JSON,
        {
            "config": result.config.to_dict(),
            "trace": info.get("trace", {}),
            "executor": info.get("executor"),
            "device": info.get("device"),
            "executor_details": info.get("executor_details", {}),
            "versions": versions(),
            "seed": result.config.seed,
            "summary": result.summary,
            **({CLUSTER_JSON_KEY: info[CLUSTER_JSON_KEY]} if CLUSTER_JSON_KEY in info else {}),
        },
    )
    return out
