"""Transforms of a canonical trace: replay faster or slower, cut a time window or a count of
requests, cap lengths at a model's max_model_len.

Each returns a new canonical trace (request_id renumbered from 0, first arrival at 0.0), copies
the attrs and appends what it did to attrs["transforms"].
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd


# Per draft token: the range that published draft/target pairs report (Leviathan et al. 2023).
DEFAULT_SPEC_ACCEPT = 0.8


def scale_rate(trace: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Replay at factor times the recorded rate: every gap between arrivals divided by factor."""
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    out = trace.copy()
    out["arrival_s"] = out["arrival_s"] / factor
    return _finish(out, trace, f"scale_rate({factor:g})")


def time_window(trace: pd.DataFrame, start_s: float, end_s: float = math.inf) -> pd.DataFrame:
    """The requests arriving in [start_s, end_s) seconds of the trace."""
    if not end_s > start_s:
        raise ValueError(f"end_s must be > start_s, got [{start_s}, {end_s})")
    arrival = trace["arrival_s"]
    out = trace[(arrival >= start_s) & (arrival < end_s)]
    return _finish(out, trace, f"time_window({start_s:g}, {end_s:g})")


def take(trace: pd.DataFrame, count: int, start: int = 0) -> pd.DataFrame:
    """count requests from the start-th (in arrival order)."""
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got count={count}, start={start}")
    return _finish(trace.iloc[start : start + count], trace, f"take({count}, start={start})")


def cap_lengths(trace: pd.DataFrame, max_model_len: int) -> pd.DataFrame:
    """Fit every request in max_model_len tokens, as a server with that limit would need.

    A prompt keeps at most max_model_len - 1 tokens (room for one output token), then the output
    at most what is left. Prefix hashes are cut to the chunks the shorter prompt still covers (a
    cut chunk keeps its hash: its tokens are still a prefix of the original chunk).
    attrs["capped"] counts the prompts and outputs that were cut.
    """
    if max_model_len < 2:
        raise ValueError(f"max_model_len must be >= 2, got {max_model_len}")
    prompt = trace["prompt_tokens"].to_numpy()
    output = trace["output_tokens"].to_numpy()
    new_prompt = np.minimum(prompt, max_model_len - 1)
    new_output = np.minimum(output, max_model_len - new_prompt)
    out = trace.copy()
    out["prompt_tokens"] = new_prompt
    out["output_tokens"] = new_output
    chunk = int(trace.attrs.get("chunk_tokens", 0))
    cut = np.flatnonzero(new_prompt < prompt)
    if chunk and len(cut):
        hashes = out["prefix_hashes"].to_numpy(dtype=object).copy()
        for i in cut.tolist():
            if hashes[i] is not None:
                hashes[i] = hashes[i][: -(-int(new_prompt[i]) // chunk)]
        out["prefix_hashes"] = hashes
    capped = {
        "max_model_len": int(max_model_len),
        "prompts": int(len(cut)),
        "outputs": int((new_output < output).sum()),
    }
    result = _finish(out, trace, f"cap_lengths({max_model_len})")
    result.attrs["capped"] = capped
    return result


def _finish(out: pd.DataFrame, original: pd.DataFrame, note: str) -> pd.DataFrame:
    out = out.reset_index(drop=True)
    out["request_id"] = np.arange(len(out), dtype=np.int64)
    if len(out):
        out["arrival_s"] = out["arrival_s"] - out["arrival_s"].iloc[0]
    out.attrs = copy.deepcopy(original.attrs)
    out.attrs.pop("spec", None)  # a spec describes the frame it loaded, not one cut from it
    out.attrs["transforms"] = [*out.attrs.get("transforms", []), note]
    return out


def set_decoding(
    trace: pd.DataFrame,
    *,
    n: int | None = None,
    beam_width: int | None = None,
    spec_tokens: int | None = None,
    spec_accept: float | None = None,
) -> pd.DataFrame:
    """Decode every request the same way: n parallel samples, beam search over beam_width beams,
    or speculative decoding with spec_tokens draft tokens accepted each with chance spec_accept.
    Arguments left None keep the trace's column, except that spec_tokens alone comes with
    DEFAULT_SPEC_ACCEPT."""
    if spec_tokens and spec_accept is None:
        spec_accept = DEFAULT_SPEC_ACCEPT
    check_decoding(n, beam_width, spec_tokens, spec_accept)
    out = trace.copy()
    values = {"n": n, "beam_width": beam_width, "spec_tokens": spec_tokens,
              "spec_accept": spec_accept}
    for column, value in values.items():
        if value is not None:
            out[column] = np.full(len(out), value, dtype=out[column].dtype)
    if ((out["beam_width"] > 1) & (out["spec_tokens"] > 0)).any():
        raise ValueError("beam search and speculative decoding together are not modelled")
    if ((out["beam_width"] > 1) & (out["n"] > out["beam_width"])).any():
        raise ValueError("n must be <= beam_width: beam search returns at most its beams")
    note = ", ".join(f"{k}={v:g}" for k, v in values.items() if v is not None)
    return _finish(out, trace, f"set_decoding({note})")


def check_decoding(n, beam_width, spec_tokens, spec_accept) -> None:
    """ValueError naming the first decoding value out of range (None: not set)."""
    checks = (
        ("n", n, n is None or n >= 1, ">= 1"),
        ("beam_width", beam_width, beam_width is None or beam_width >= 1, ">= 1"),
        ("spec_tokens", spec_tokens, spec_tokens is None or spec_tokens >= 0, ">= 0"),
        ("spec_accept", spec_accept, spec_accept is None or 0.0 <= spec_accept <= 1.0,
         "in [0, 1]"),
    )
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name} must be {allowed}, got {value}")
