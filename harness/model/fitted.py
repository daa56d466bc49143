"""A step-time model fitted to the GPU executor's own measured steps (`kvharness profile`).

The roofline of costmodel.py guesses its efficiencies; this model learns a handful of
interpretable coefficients from benchmarks/results/profile_<model>_<gpu>.csv:

    step_s = overhead
           + eager overhead, when the step holds a prefill chunk (prefill and mixed steps run
             eagerly; decode-only steps replay a CUDA graph)
           + a convex piecewise-linear function of the batch's tokens (the dense layers: flat
             while the weights' reads dominate, steeper once the GEMMs are compute-bound),
             written as a slope plus non-negative extra slopes past a few knots
           + seconds per KV token that decode attention reads, one rate in decode-only steps
             and another in steps that also carry a prefill chunk (the two run different
             attention paths: a captured graph of split-KV decode, and the mixed path)
           + seconds per KV token of prior context that prefill attention reads
           + seconds per prefill query-key pair
           + seconds per token of the longest decode sequence's split, in every step with
             decodes (decode_max_context x min(decode_tokens, decode_wave_seqs) /
             decode_wave_seqs tokens, see below)
           + swap and host-tier traffic over PCIe, priced as the roofline does (the profile
             moves no KV to or from the host).

Every coefficient is non-negative (a longer context never makes a step faster), fitted by
non-negative least squares on relative errors, so that short decode steps weigh as much as long
prefills. Vidur (Agrawal et al., MLSys 2024) profiles operators and fits a predictor per
operator; this is a coarser, per-step fit of the same idea.

The longest split: the split-KV decode kernel (kernels/paged_decode.py) runs one program per
sequence, KV head and split, and splits every sequence alike, into as many parts as keep the
grid about one wave of the GPU: a batch of fewer than decode_wave_seqs sequences is split into
about decode_wave_seqs / decode_tokens parts, a larger one not at all. A program streams its
part at one SM's pace, so when contexts are skewed (one long sequence among short ones) the
longest sequence's programs, not the bytes all of them read, set the kernel's time. The KV-token
terms price contexts spread as the profile's evenly spread batches are; this term prices the
longest split beyond that, and is fitted on the profile's skewed batches. decode_wave_seqs is
picked among powers of two by the fit (the least squared relative error). A profile without the
decode_max_context column (measured before it existed) fits without the term: coefficient 0.
Where the executor decoded a step over a work list instead (its longest context over
balance_skew times the mean, `--decode-balance`, harness.model.config.DECODE_BALANCE), every
program gets the same share of the keys and no split is longest: those steps have no such term,
in the fit and in pricing. The profile's header says which skew it was measured with
(BALANCE_SKEW_KEY; a profile without it was measured with none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.model.budget import bytes_per_token
from harness.model.config import RunConfig
from kernels.work_list import over_skew
from reports.schema import read_measurement
from reports.schema import results_dir as measured_results_dir

# Token counts where GEMMs change regime on current GPUs lie between a few dozen and a few
# thousand tokens; knots outside a profile's range are dropped (nothing there to fit them).
DEFAULT_KNOTS = (64, 256, 1024, 4096)
# The aggregates of a Batch the model reads (the names of Batch's fields and profile columns).
BATCH_FEATURES = ("prefill_tokens", "decode_tokens", "prefill_context_tokens",
                  "decode_context_tokens", "prefill_attention_pairs", "decode_max_context")
# The one a profile or step table from before it lacks: read as 0 there.
LONGEST_FEATURE = "decode_max_context"
# The profile header line of the skew above which its steps decoded over work lists.
BALANCE_SKEW_KEY = "decode_balance_skew"
# Candidate decode_wave_seqs, those up to a profile's largest decode batch.
WAVE_SEQS = tuple(2 ** i for i in range(11))


class ProfileError(ValueError):
    """A profile that cannot be fitted (missing columns, no rows for a block size)."""


@dataclass(frozen=True)
class FittedCostModel:
    """Coefficients in seconds (per token, per KV token read, per pair); step_s() prices a step
    with the signature of CostModel.step_s."""

    overhead_s: float
    eager_overhead_s: float
    token_s: float
    knots: tuple[int, ...]
    knot_slopes_s: tuple[float, ...]  # extra seconds per token past each knot
    decode_kv_token_s: float
    mixed_decode_kv_token_s: float  # per decode KV token in a step with a prefill chunk
    prefill_kv_token_s: float
    prefill_pair_s: float
    longest_split_token_s: float = 0.0  # per token of the longest decode sequence's split
    decode_wave_seqs: int = 1  # decode sequences below which the decode kernel splits them
    balance_skew: float | None = None  # steps skewed past this decoded over work lists
    swap_token_s: float = 0.0
    block_size: int = 0  # the profiled block size the coefficients come from
    source: str = ""  # the profile's file name
    fit_err_median: float = math.nan  # median |fitted / measured - 1| over the profile's rows

    def step_s(
        self,
        *,
        prefill_tokens: int,
        decode_tokens: int,
        prefill_context_tokens: int,
        decode_context_tokens: int,
        prefill_attention_pairs: int,
        decode_max_context: int = 0,
        swap_tokens: int = 0,
        maximum=max,
    ):
        """Seconds of one step. Any argument may be a numpy array (with maximum=np.maximum):
        the arithmetic is the same, term by term, so both give equal floats."""
        tokens = prefill_tokens + decode_tokens
        with_prefill = prefill_tokens > 0
        step = self.overhead_s + self.eager_overhead_s * with_prefill
        step = step + self.token_s * tokens
        for knot, slope in zip(self.knots, self.knot_slopes_s):
            step = step + slope * maximum(tokens - knot, 0)
        step = step + self.decode_kv_token_s * decode_context_tokens * (1 - with_prefill)
        step = step + self.mixed_decode_kv_token_s * decode_context_tokens * with_prefill
        step = step + self.prefill_kv_token_s * (prefill_context_tokens - prefill_tokens)
        step = step + self.prefill_pair_s * prefill_attention_pairs
        wave = self.decode_wave_seqs
        split_seqs = decode_tokens - maximum(decode_tokens - wave, 0)  # min(decode_tokens, wave)
        split = split_decode(self.balance_skew, decode_tokens, decode_context_tokens,
                             decode_max_context)
        step = step + self.longest_split_token_s * decode_max_context * split_seqs / wave * split
        return step + self.swap_token_s * swap_tokens

    def details(self) -> dict:
        """What run.json records of the model that priced the run."""
        return {
            "cost_model": f"fitted:{self.source}" if self.source else "fitted",
            "profile_block_size": self.block_size,
            "overhead_s": self.overhead_s,
            "eager_overhead_s": self.eager_overhead_s,
            "token_s": self.token_s,
            "knots": list(self.knots),
            "knot_slopes_s": list(self.knot_slopes_s),
            "decode_kv_token_s": self.decode_kv_token_s,
            "mixed_decode_kv_token_s": self.mixed_decode_kv_token_s,
            "prefill_kv_token_s": self.prefill_kv_token_s,
            "prefill_pair_s": self.prefill_pair_s,
            "longest_split_token_s": self.longest_split_token_s,
            "decode_wave_seqs": self.decode_wave_seqs,
            "balance_skew": self.balance_skew,
            "swap_token_s": self.swap_token_s,
            "fit_err_median": self.fit_err_median,
        }


def batch_columns(frame: pd.DataFrame, dtype) -> dict[str, np.ndarray]:
    """The BATCH_FEATURES columns of a frame (a profile, or the batches a measured run
    recorded); LONGEST_FEATURE reads as 0 where the frame predates it."""
    missing = [c for c in BATCH_FEATURES if c not in frame.columns and c != LONGEST_FEATURE]
    if missing:
        raise ProfileError(f"profile lacks columns {missing}")
    return {c: frame[c].to_numpy(dtype=dtype) if c in frame.columns
            else np.zeros(len(frame), dtype=dtype) for c in BATCH_FEATURES}


def split_decode(balance_skew: float | None, decode_tokens, decode_context_tokens,
                 decode_max_context):
    """1 where a step's decodes ran the split-KV launch, 0 where they ran over a work list
    (kernels.work_list.over_skew, the executor's rule; numpy arrays too)."""
    if balance_skew is None:
        return 1
    return 1 - over_skew(balance_skew, decode_max_context, decode_tokens, decode_context_tokens)


def design_matrix(frame: pd.DataFrame, knots: tuple[int, ...],
                  wave_seqs: int | None = None, balance_skew: float | None = None) -> np.ndarray:
    """One column per coefficient of FittedCostModel, in its field order; the longest split's
    only with its decode_wave_seqs (0 in the steps balance_skew says ran over work lists)."""
    get = batch_columns(frame, np.float64)
    tokens = get["prefill_tokens"] + get["decode_tokens"]
    with_prefill = (get["prefill_tokens"] > 0).astype(np.float64)
    columns = [np.ones_like(tokens), with_prefill, tokens]
    columns += [np.maximum(tokens - k, 0.0) for k in knots]
    columns += [get["decode_context_tokens"] * (1 - with_prefill),
                get["decode_context_tokens"] * with_prefill,
                get["prefill_context_tokens"] - get["prefill_tokens"],
                get["prefill_attention_pairs"]]
    if wave_seqs is not None:
        split_seqs = np.minimum(get["decode_tokens"], wave_seqs)
        split = split_decode(balance_skew, get["decode_tokens"], get["decode_context_tokens"],
                             get[LONGEST_FEATURE])
        columns.append(get[LONGEST_FEATURE] * split_seqs / wave_seqs * split)
    return np.column_stack(columns)


def nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimising |a x - b|: scipy's NNLS when installed, else least squares that drops
    the most negative coefficient and solves again until none is negative."""
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    scaled = a / scale
    try:
        from scipy.optimize import nnls
    except ImportError:
        x = _drop_negatives_lstsq(scaled, b)
    else:
        x = nnls(scaled, b, maxiter=50 * a.shape[1])[0]
    return x / scale


def _drop_negatives_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        solution = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
        if (solution >= 0).all():
            x[active] = solution
            break
        del active[int(np.argmin(solution))]
    return x


def fit(frame: pd.DataFrame, *, block_size: int | None = None,
        knots: tuple[int, ...] | None = None, source: str = "",
        balance_skew: float | None = None) -> FittedCostModel:
    """Fit the coefficients to a profile's rows (measured_ms) of the profiled block size nearest
    to block_size (in log2; all rows when None); knots default to DEFAULT_KNOTS inside the
    range of the rows' token counts. decode_wave_seqs: the WAVE_SEQS up to the rows' largest
    decode batch that fits best, where the rows have LONGEST_FEATURE. balance_skew: the one the
    profile was measured with (BALANCE_SKEW_KEY)."""
    rows = _rows_of_block_size(frame, block_size)
    tokens = (rows["prefill_tokens"] + rows["decode_tokens"]).to_numpy()
    if knots is None:
        knots = tuple(k for k in DEFAULT_KNOTS if tokens.min() < k < tokens.max())
    measured_s = rows["measured_ms"].to_numpy(dtype=np.float64) / 1e3
    waves: list[int | None] = [None]
    if LONGEST_FEATURE in rows:
        largest = max(1, int(rows["decode_tokens"].max()))
        waves = [w for w in WAVE_SEQS if w <= largest]
    _, x, wave = min((_solve(rows, knots, measured_s, w, balance_skew) + (w,) for w in waves),
                     key=lambda solution: solution[0])
    n = len(knots)
    model = FittedCostModel(
        overhead_s=x[0], eager_overhead_s=x[1], token_s=x[2], knots=tuple(int(k) for k in knots),
        knot_slopes_s=tuple(float(v) for v in x[3:3 + n]), decode_kv_token_s=x[3 + n],
        mixed_decode_kv_token_s=x[4 + n], prefill_kv_token_s=x[5 + n], prefill_pair_s=x[6 + n],
        longest_split_token_s=x[7 + n] if wave else 0.0, decode_wave_seqs=wave or 1,
        balance_skew=balance_skew,
        block_size=int(rows["block_size"].iloc[0]) if "block_size" in rows else 0, source=source,
    )
    model = replace(model, **{k: float(getattr(model, k)) for k in (
        "overhead_s", "eager_overhead_s", "token_s", "decode_kv_token_s",
        "mixed_decode_kv_token_s", "prefill_kv_token_s", "prefill_pair_s",
        "longest_split_token_s")})
    errors = price_rows(model, rows) / measured_s - 1.0
    return replace(model, fit_err_median=float(np.median(np.abs(errors))))


def _solve(rows: pd.DataFrame, knots: tuple[int, ...], measured_s: np.ndarray,
           wave_seqs: int | None, balance_skew: float | None) -> tuple[float, np.ndarray]:
    """The coefficients for these knots and decode_wave_seqs, and their sum of squared relative
    errors."""
    # Relative residuals: each row divided by its own measured time.
    a = design_matrix(rows, knots, wave_seqs, balance_skew) / measured_s[:, None]
    x = nonnegative_lstsq(a, np.ones_like(measured_s))
    return float(np.sum((a @ x - 1.0) ** 2)), x


def _rows_of_block_size(frame: pd.DataFrame, block_size: int | None) -> pd.DataFrame:
    if frame.empty:
        raise ProfileError("profile has no rows")
    if block_size is None or "block_size" not in frame:
        return frame
    sizes = sorted(int(b) for b in frame["block_size"].unique())
    nearest = min(sizes, key=lambda b: (abs(math.log2(b) - math.log2(block_size)), b))
    return frame[frame["block_size"] == nearest]


def price_rows(model: FittedCostModel, frame: pd.DataFrame) -> np.ndarray:
    """Seconds the model gives each row of a frame with the BATCH_FEATURES columns (a profile,
    or the batches a measured run recorded)."""
    if model.longest_split_token_s and LONGEST_FEATURE not in frame.columns:
        raise ProfileError(f"rows lack {LONGEST_FEATURE}, which the model prices")
    get = batch_columns(frame, np.int64)
    swap = frame["swap_tokens"].to_numpy(dtype=np.int64) if "swap_tokens" in frame else 0
    return np.asarray(model.step_s(**get, swap_tokens=swap, maximum=np.maximum), dtype=np.float64)


def header_skew(header: dict[str, str], path: Path) -> float | None:
    """The BALANCE_SKEW_KEY of a profile's header: none where absent (measured before it)."""
    value = header.get(BALANCE_SKEW_KEY, "none")
    if value == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise ProfileError(f"{path}: header {BALANCE_SKEW_KEY} is {value!r}, not a number "
                           "or none") from None


def gpu_family(gpu_name: str) -> str:
    """The GPU part of a profile's name: "h200-141gb" -> "h200"."""
    return gpu_name.split("-")[0].lower()


def tp_suffix(tp: int) -> str:
    """What a profile's file name adds for a tensor-parallel width: nothing for one GPU."""
    return "" if tp == 1 else f"_tp{tp}"


def profile_path(model_name: str, gpu_name: str, results_dir: Path | None = None,
                 tp: int = 1) -> Path:
    where = Path(results_dir) if results_dir is not None else measured_results_dir()
    return where / f"profile_{model_name}_{gpu_family(gpu_name)}{tp_suffix(tp)}.csv"


def fitted_cost_model(config: RunConfig, block_size: int, *, results_dir: Path | None = None,
                      decode_bandwidth_ratio: float = 1.0) -> FittedCostModel | None:
    """The model fitted to the profile of this run's model, GPU family and tensor-parallel
    width, or None when there is none. A profile at a width (`kvharness profile --tp N`) times
    the whole split decoder, all-reduces included; without one, a tensor-parallel run keeps the
    roofline, which prices the all-reduces with its own term.

    A profile is measured with a bf16 cache; a run of another kv_dtype reads its own bytes per
    KV token (half for fp8), decode attention (in decode-only and mixed steps, its longest split
    too: the same kernel) at decode_bandwidth_ratio times the bf16 kernel's bandwidth
    (harness.model.costmodel.decode_bandwidth_ratio)."""
    path = profile_path(config.model.name, config.gpu.name, results_dir, config.tp)
    if not path.is_file():
        return None
    profile = read_measurement(path)
    model = fit(profile.table, block_size=block_size, source=path.name,
                balance_skew=header_skew(profile.header, path))
    kv_bytes = bytes_per_token(config.model, config.tp, config.kv_dtype)
    bytes_ratio = kv_bytes / bytes_per_token(config.model, config.tp)
    decode = bytes_ratio / decode_bandwidth_ratio
    return replace(model, swap_token_s=kv_bytes / config.gpu.pcie_bytes_s,
                   decode_kv_token_s=model.decode_kv_token_s * decode,
                   mixed_decode_kv_token_s=model.mixed_decode_kv_token_s * decode,
                   longest_split_token_s=model.longest_split_token_s * decode,
                   prefill_kv_token_s=model.prefill_kv_token_s * bytes_ratio)
