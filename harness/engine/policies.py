"""Replica scheduling policies: the few choices in which the field's schedulers differ.

The scheduler keeps one path (queues, memory, preemption, batches); a policy only answers what
that path asks: the token budget of a step, whether prefills and decodes share a step, whether
decodes go before prefill chunks, and where a request enters the waiting queue.

- vllm-v1: vLLM's V1 engine. Running requests in admission order, each with its next prefill
  chunk or one decode token, then admissions, under max_num_batched_tokens (the default).
- vllm-v0: vLLM's V0 engine, prefill-first. A step runs prefills only (ongoing chunks, then
  admissions) whenever there are any, and decodes only otherwise: the two never share a step.
- sarathi: Sarathi-Serve's stall-free batching (Agrawal et al., OSDI 2024). Every running decode
  first, then prefill chunks, all within a fixed per-step token budget (chunk_size), so that a
  long prompt never pauses ongoing decodes and every step stays short.
- edf: vLLM-v1 batching with the waiting queue in earliest-deadline-first order on each request's
  TTFT deadline (arrival + ttft_slo_s + prompt tokens x ttft_slo_s_per_token) instead of arrival
  order.
"""
from __future__ import annotations

import bisect
from collections import deque

from harness.engine.sequences import Group
from harness.model.config import SchedulerConfig


class MixedBatching:
    """vllm-v1, and the answers every other policy inherits."""

    name = "vllm-v1"
    prefill_first = False  # a step with prefill work runs no decodes
    decodes_first = False  # decodes are scheduled before every prefill chunk

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.token_budget = config.max_num_batched_tokens

    def admission_budget(self, num_running_seqs: int) -> int:
        """Tokens left for admissions in a step that decodes every running sequence."""
        return self.token_budget - num_running_seqs

    def enqueue(self, waiting: deque[Group], g: Group) -> None:
        """A new request joins the waiting queue."""
        waiting.append(g)

    def requeue(self, waiting: deque[Group], g: Group) -> None:
        """A request preempted by recompute goes back: first, as vLLM does."""
        waiting.appendleft(g)


class PrefillFirst(MixedBatching):
    name = "vllm-v0"
    prefill_first = True

    def admission_budget(self, num_running_seqs: int) -> int:
        return self.token_budget  # admissions run in steps of their own


class StallFree(MixedBatching):
    name = "sarathi"
    decodes_first = True

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__(config)
        self.token_budget = config.chunk_size


class EarliestDeadlineFirst(MixedBatching):
    name = "edf"

    def deadline_s(self, g: Group) -> float:
        cfg = self.config
        return g.arrival_s + cfg.ttft_slo_s + g.prompt * cfg.ttft_slo_s_per_token

    def enqueue(self, waiting: deque[Group], g: Group) -> None:
        # After every request of an equal deadline: arrival order breaks ties.
        bisect.insort_right(waiting, g, key=self.deadline_s)

    def requeue(self, waiting: deque[Group], g: Group) -> None:
        bisect.insort_left(waiting, g, key=self.deadline_s)


POLICIES: dict[str, type[MixedBatching]] = {
    cls.name: cls for cls in (MixedBatching, PrefillFirst, StallFree, EarliestDeadlineFirst)
}


def make_policy(config: SchedulerConfig) -> MixedBatching:
    return POLICIES[config.policy](config)
