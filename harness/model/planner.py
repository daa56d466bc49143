"""Capacity planning: how many tokens of KV a model on a GPU holds, the longest context that
fits, and how many sequences of a given context each allocation policy runs at once.

It also answers the seeds' warning case: a max_model_len past what memory holds makes a static
engine (which preallocates max_model_len per sequence) fail at start; the planner says what to
clamp to, and which tensor-parallel degree would hold it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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


def _round_up(tokens: int, unit: int) -> int:
    return -(-tokens // unit) * unit


def allocator_capacities(
    slots: int, context: int, *, max_model_len: int | None, block_size: int, align_tokens: int
) -> tuple[AllocatorCapacity, ...]:
    """Per policy: static reserves max_model_len (else the context) in aligned units; paged and
    hybrid round each sequence up to whole blocks; segmented stores exactly its tokens."""
    static_seq = _round_up(max_model_len or context, align_tokens)
    arena = slots // align_tokens * align_tokens
    paged_seq = _round_up(context, block_size)
    blocks = slots // block_size
    paged_concurrency = blocks // (paged_seq // block_size)
    return (
        AllocatorCapacity("static", static_seq, arena // static_seq, arena),
        AllocatorCapacity("paged", paged_seq, paged_concurrency, blocks * block_size),
        AllocatorCapacity("segmented", context, slots // context, slots),
        AllocatorCapacity("hybrid", paged_seq, paged_concurrency, blocks * block_size),
    )


def max_model_len_warning(
    config: RunConfig, max_model_len: int, *, align_tokens: int = 16
) -> str | None:
    """The message for a max_model_len the budget cannot hold for even one sequence."""
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
    return (
        f"max_model_len {max_model_len:,} needs {need / GIB:,.1f} GiB of KV per sequence per GPU; "
        f"{where} holds {budget.slots:,} tokens ({budget.kv_bytes / GIB:,.1f} GiB of KV): static "
        f"preallocation fails at start. Clamp max_model_len to "
        f"{budget.slots // align_tokens * align_tokens:,}{hint}."
    )


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
    block_size: int = 16,
    align_tokens: int = 16,
) -> CapacityPlan:
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    budget = kv_budget(config)
    caps = allocator_capacities(
        budget.slots, context, max_model_len=max_model_len, block_size=block_size,
        align_tokens=align_tokens,
    )
    warnings = []
    if max_model_len is not None:
        warning = max_model_len_warning(config, max_model_len, align_tokens=align_tokens)
        if warning:
            warnings.append(warning)
    if context > budget.slots:
        warnings.append(
            f"context {context:,} exceeds the KV budget of {budget.slots:,} tokens: "
            "no allocator runs even one such sequence"
        )
    return CapacityPlan(config, budget, context, max_model_len, caps, tuple(warnings))
