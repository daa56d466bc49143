"""Capacity planning: how many tokens of KV a model on a GPU holds, the longest context that
fits, and how many sequences of a given context each allocation policy runs at once.

It also answers the seeds' warning case: a max_model_len past what memory holds makes an engine
that preallocates max_model_len per sequence fail at start; the planner says what to clamp to,
and which tensor-parallel degree would hold it. What each policy holds is its spec's capacity
formula (allocators/).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from allocators import SPECS, AllocatorSpec, spec_of
from harness.model.budget import BudgetError, KvBudget, kv_budget
from harness.model.config import RunConfig
from harness.model.presets import GIB

TP_CANDIDATES = (1, 2, 4, 8)


@dataclass(frozen=True)
class AllocatorCapacity:
    name: str
    tokens_per_seq: int  # slots one sequence of the planned context occupies
    max_concurrency: int  # sequences of that context the budget holds at once
    largest_context: int  # the longest single sequence that fits


@dataclass(frozen=True)
class CapacityPlan:
    config: RunConfig
    budget: KvBudget
    context: int
    max_model_len: int | None
    allocators: tuple[AllocatorCapacity, ...]
    warnings: tuple[str, ...]


def planned_params(spec: AllocatorSpec, params: Mapping[str, Any], max_model_len: int | None):
    """An allocator's parameters for the plan: an allocator that reserves a fixed length per
    request reserves the configured max_model_len unless its own parameter says otherwise."""
    if spec.max_len_param is None or max_model_len is None:
        return dict(params)
    return {spec.max_len_param: max_model_len, **params}


def run_params(config: RunConfig) -> dict[str, Any]:
    """The allocator parameters a run builds with: its own, and for an allocator that reserves
    a fixed length per request, the run's max_model_len unless its parameter says otherwise
    (a preallocating engine reserves the model's context)."""
    spec = spec_of(config.allocator.name)
    return planned_params(spec, config.allocator.kwargs, config.max_model_len)


def allocator_capacities(
    slots: int,
    context: int,
    *,
    max_model_len: int | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[AllocatorCapacity, ...]:
    """Each allocator's capacity by its spec's formula; params maps a name to its parameters
    (defaults for the rest)."""
    params = params or {}
    caps = []
    for name, spec in SPECS.items():
        given = planned_params(spec, params.get(name, {}), max_model_len)
        cap = spec.capacity(slots, context, given)
        caps.append(AllocatorCapacity(name, **dataclasses.asdict(cap)))
    return tuple(caps)


def max_model_len_warning(
    config: RunConfig, max_model_len: int, *, unit_tokens: int = 1
) -> str | None:
    """The message for a max_model_len the budget cannot hold for even one sequence; the
    clamp suggested is whole units of unit_tokens."""
    budget = kv_budget(config)
    if max_model_len <= budget.slots:
        return None
    need = max_model_len * budget.bytes_per_token
    where = f"{config.model.name} on {config.gpu.name} x tp {config.tp}"
    fits = [tp for tp in TP_CANDIDATES if tp > config.tp and _slots(config, tp) >= max_model_len]
    if fits:
        hint = f"; tp {fits[0]} would hold it"
    else:
        hint = f"; no tp up to {TP_CANDIDATES[-1]} holds it"
    preallocating = " and ".join(s.name for s in SPECS.values() if s.max_len_param)
    return (
        f"max_model_len {max_model_len:,} needs {need / GIB:,.1f} GiB of KV per sequence per GPU; "
        f"{where} holds {budget.slots:,} tokens ({budget.kv_bytes / GIB:,.1f} GiB of KV): "
        f"{preallocating} preallocation fails at start. Clamp max_model_len to "
        f"{budget.slots // unit_tokens * unit_tokens:,}{hint}."
    )


def preallocation_warning(config: RunConfig) -> str | None:
    """max_model_len_warning for a run whose allocator reserves a fixed length per request."""
    spec = spec_of(config.allocator.name)
    params = run_params(config)
    reserved = spec.max_model_len(params)
    if reserved is None:
        return None
    unit = spec.resolve(params)[spec.grain]
    return max_model_len_warning(config, reserved, unit_tokens=unit)


def _slots(config: RunConfig, tp: int) -> int:
    try:
        return kv_budget(dataclasses.replace(config, tp=tp)).slots
    except BudgetError:
        return 0


def plan_capacity(
    config: RunConfig,
    *,
    context: int,
    max_model_len: int | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> CapacityPlan:
    """Budget and per-allocator capacity at context; params maps an allocator name to its
    parameters (its spec's defaults for the rest)."""
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    budget = kv_budget(config)
    caps = allocator_capacities(budget.slots, context, max_model_len=max_model_len, params=params)
    warnings = []
    if max_model_len is not None:
        warning = max_model_len_warning(
            config, max_model_len, unit_tokens=_preallocation_unit(params or {})
        )
        if warning:
            warnings.append(warning)
    if context > budget.slots:
        warnings.append(
            f"context {context:,} exceeds the KV budget of {budget.slots:,} tokens: "
            "no allocator runs even one such sequence"
        )
    return CapacityPlan(config, budget, context, max_model_len, caps, tuple(warnings))


def _preallocation_unit(params: Mapping[str, Mapping[str, Any]]) -> int:
    """The grain a max_model_len clamp is rounded to: that of the allocators that preallocate
    it (the coarsest, should several), else 1."""
    units = [spec.resolve(params.get(name, {}))[spec.grain]
             for name, spec in SPECS.items() if spec.max_len_param]
    return max(units, default=1)
