"""The files kvharness writes and reads, defined once: a run directory, a sweep directory, and
the measured tables under benchmarks/results/.

The engine's recorder and the sweep runner write these names and columns; reports/ reads them;
the cost model reads measured tables through read_measurement. This module imports nothing of
the project, so every layer may use it (it is the one module of reports/ outside the CLI's reach
that harness/ imports).

Units are in the names: *_s seconds (times from the start of the trace), *_ms milliseconds,
*_tokens and the slot figures in KV slots (one token's K and V in every layer), *_bytes bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a table is read: the CLI's parser imports this
    import pandas as pd

# -- a run directory ----------------------------------------------------------------------------
STEPS_FILE = "steps.parquet"  # one row per engine step
REQUESTS_FILE = "requests.parquet"  # one row per trace request
RUN_JSON = "run.json"  # the run description (config, trace spec), versions and summary
# run.json's config names the KV cache's element type under this key, and leaves it out when it
# is the default (runs recorded before the choice existed stored bf16).
KV_DTYPE_KEY = "kv_dtype"
DEFAULT_KV_DTYPE = "bf16"

USAGE_COLUMNS = (
    "budget", "backed", "live", "logical", "reserved", "internal", "cached", "free",
    "largest_free_run", "stale", "utilization", "external_fragmentation",
)
STEP_COLUMNS = (
    "step", "time_s", "step_ms", "running", "waiting", "swapped", "batch_tokens",
    "prefill_tokens", "decode_tokens", "preempted",  # preempted: sequences preempted to run it
) + USAGE_COLUMNS
FLOAT_STEP_COLUMNS = ("time_s", "step_ms", "utilization", "external_fragmentation")
KV_BYTES_COLUMN = "kv_allocated_bytes"  # measured runs only: device KV memory after the step
# Cluster runs only, the last column of steps and requests: the replica that ran the step or
# served the request (steps are numbered per replica). run.json then has a "cluster" table.
REPLICA_COLUMN = "replica"
CLUSTER_JSON_KEY = "cluster"
# Runs with a CPU tier of the prefix cache only (cpu_cache_bytes > 0), after the columns above:
# per step the tokens of KV copied to the host tier and back from it, per request the prompt
# tokens of its prefix hit that came from the host tier (of prefix_hit_tokens).
HOST_TIER_STEP_COLUMNS = ("host_offload_tokens", "host_restore_tokens")
HOST_HIT_COLUMN = "host_hit_tokens"
REQUEST_COLUMNS = (
    "request_id", "arrival_s", "prompt_tokens", "output_tokens", "n", "status", "reason",
    "admit_s", "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s", "preemptions",
    "prefix_hit_tokens",
)
# Tables are Parquet: exact float64 (late times keep their microseconds), a fraction of the size
# of text, and byte-identical for equal runs (write_table adds no timestamps).
PARQUET_COMPRESSION = "zstd"
SUMMARY_KEYS = (
    "requests", "completed", "rejected", "truncated_prompts", "truncated_outputs", "queued_at_end", "running_at_end", "budget_slots",
    "bytes_per_token", "utilization_mean", "utilization_p50", "utilization_p99",
    "waste_reserved", "waste_internal", "waste_external", "waste_cached", "waste_stale",
    "waste_free",
    "peak_running", "mean_running", "peak_backed_bytes", "throughput_tok_s", "output_tokens",
    "prefill_tokens", "prefix_hit_tokens", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
    "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "preemptions", "sim_time_s", "mean_step_ms",
)

# And the summary keys of such runs, after SUMMARY_KEYS: the prompt tokens of admitted requests
# found on the GPU tier, on the host tier and in neither (shares of them: *_rate), and the bytes
# copied over PCIe each way.
HOST_TIER_SUMMARY_KEYS = (
    "prefix_hit_tokens_gpu", "prefix_hit_tokens_host", "prefix_miss_tokens",
    "prefix_hit_rate_gpu", "prefix_hit_rate_host", "prefix_miss_rate",
    "host_offload_bytes", "host_restore_bytes",
)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """One table of a run directory. The file holds the columns, the pandas schema and the
    writer's version, nothing that differs between two writes of equal frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression=PARQUET_COMPRESSION)


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by write_table; ValueError (naming the file) when it is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except pa.ArrowException as exc:
        raise ValueError(f"{path}: not a Parquet table ({exc})") from exc


# -- a sweep directory ----------------------------------------------------------------------------
RESULTS_CSV = "results.csv"  # one row per cell: KEY_COLUMNS, config columns, SUMMARY_KEYS
SWEEP_JSON = "sweep.json"
CELLS_DIR = "cells"  # one run directory per cell, named by its config hash
KEY_COLUMNS = ("cell", "config_hash", "status", "error")


def config_columns(header) -> list[str]:
    """The config columns of a results table: those between `error` and the first summary key."""
    header = list(header)
    start = header.index("error") + 1
    end = next((i for i, name in enumerate(header) if name in SUMMARY_KEYS), len(header))
    return header[start:end]


# -- measured tables ----------------------------------------------------------------------------
# profile_<model>_<gpu>.csv (`kvharness profile`): one row per measured step shape; measured_ms
# is the median of the repeats, kv_bytes_read what attention reads of earlier tokens' KV,
# decode_max_context the longest decode's context (profiles from before it lack the column).
PROFILE_COLUMNS = (
    "kind", "block_size", "batch", "prefill_tokens", "decode_tokens", "decode_context_tokens",
    "decode_max_context", "prefill_context_tokens", "prefill_attention_pairs", "kv_bytes_read",
    "measured_ms", "min_ms", "max_ms", "repeats",
)
# fidelity_<gpu>.csv (benchmarks/bench_fidelity.py): one row per slice and allocator. step_err_*
# are quantiles of |simulated / measured - 1| over the measured steps, each priced by the fitted
# model; the other *_err columns are signed simulated / measured - 1 of the two runs.
FIDELITY_COLUMNS = (
    "slice", "allocator", "steps_measured", "steps_simulated", "step_err_median", "step_err_p90",
    "total_time_err", "ttft_p50_err", "ttft_p99_err", "throughput_err",
)
# fp8_accuracy_<gpu>.csv (benchmarks/bench_fp8_accuracy.py): one row per prompt, an fp8 KV
# cache against one in the model's dtype on the same random weights (harness/gpu/kv_accuracy.py):
# max abs errors over every layer's attention output and over the logits (beside the largest
# reference value, for scale), over `steps` greedy tokens fed the reference's tokens; the share
# of them the fp8 run also picks, and the first it does not (steps: none).
KV_ACCURACY_COLUMNS = (
    "model", "prompt_tokens", "steps", "attention_max_abs_err", "attention_max_abs",
    "logits_max_abs_err", "logits_max_abs", "token_agreement", "first_divergence",
)
# The validation's run directories, in fidelity_runs_<gpu>.tar.gz (or a folder of that name):
# <slice>-<allocator>-gpu and <slice>-<allocator>-sim; the measured one also holds the batch of
# every measured step with the fitted model's price of it.
STEP_BATCHES_FILE = "step_batches.csv"
STEP_BATCH_COLUMNS = (
    "step", "kind", "prefill_tokens", "decode_tokens", "prefill_context_tokens",
    "decode_context_tokens", "prefill_attention_pairs", "decode_max_context", "swap_tokens",
    "measured_ms", "predicted_ms",
)


def fidelity_run_name(slice_name: str, allocator: str, measured: bool) -> str:
    return f"{slice_name}-{allocator}-{'gpu' if measured else 'sim'}"


class MeasurementError(ValueError):
    """A results CSV that cannot be read (bad header comment or CSV body)."""


@dataclass(frozen=True)
class Measurement:
    """A measured table: `# key: value` comment lines (device, torch, triton, date, command),
    then a CSV table."""

    path: Path
    header: dict[str, str]
    table: pd.DataFrame

    @property
    def device(self) -> str:
        return self.header.get("device", "unknown device")

    @property
    def date(self) -> str:
        return self.header.get("date", "unknown date")


def read_measurement(path: str | Path) -> Measurement:
    path = Path(path)
    header: dict[str, str] = {}
    lines = path.read_text().splitlines()
    body_start = 0
    for number, line in enumerate(lines, start=1):
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition(":")
        if not sep:
            raise MeasurementError(f"{path}:{number}: header comment {line!r} is not "
                                   "`# key: value`")
        header[key.strip()] = value.strip()
        body_start = number
    if body_start == len(lines):
        raise MeasurementError(f"{path}: no CSV table after the header comments")
    import pandas as pd

    try:
        table = pd.read_csv(path, skiprows=body_start)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MeasurementError(f"{path}: {exc}") from exc
    return Measurement(path=path, header=header, table=table)


def results_dir() -> Path:
    """Where the measured tables are: shipped inside an installed package (the wheel maps
    benchmarks/results to reports/measured_tables), else the source checkout's folder."""
    shipped = Path(__file__).with_name("measured_tables")
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[1] / "benchmarks" / "results"
