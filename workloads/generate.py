"""Synthetic workloads: a frozen WorkloadSpec in, a canonical trace out, seeded and deterministic.

A workload is a stream of conversations. Conversation starts follow `arrivals`; each conversation
has `turns` turns, each turn arriving an exponential think time (mean think_time_s) after the one
before (a trace cannot know when an answer completes). Turn k's prompt is the conversation so far:
one of `num_system_prompts` shared system prompts (if system_prompt_tokens > 0), every earlier
user message and answer, then its own user message drawn from `prompt_tokens`; its output is drawn
from `output_tokens`. Every request asks for `n` parallel samples, or beam search over
`beam_width` beams, or speculative decoding of `spec_tokens` draft tokens a step, each accepted
with chance `spec_accept` (see harness.engine.decoding for what each does to memory).
`num_requests` requests are kept: the earliest, after enough conversations are generated.

Prefix hashes, when something is shared (a system prompt, or more than one turn): the prompt is cut
into chunks of chunk_tokens tokens. A full chunk inside a system prompt has that system prompt's
id for it, a full chunk of a conversation's own tokens has that conversation's id for it, and a
partial last chunk has an id used nowhere else. So every conversation shares the system prompt's
full chunks, and a later turn shares its earlier turns' full chunks (prompt and answer).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workloads.distributions import Arrivals, Fixed, Lengths, Poisson
from workloads.trace import make_trace
from workloads.transforms import check_decoding


_DECODING_DEFAULTS = {"beam_width": 1, "spec_tokens": 0, "spec_accept": 0.8}


@dataclass(frozen=True, repr=False)
class WorkloadSpec:
    """Everything that decides a synthetic trace."""

    num_requests: int
    arrivals: Arrivals = Poisson(1.0)  # of conversation starts (= requests when turns is 1)
    prompt_tokens: Lengths = Fixed(512)  # the new user message of each turn
    output_tokens: Lengths = Fixed(128)
    n: int = 1
    beam_width: int = 1
    spec_tokens: int = 0
    spec_accept: float = 0.8
    system_prompt_tokens: int = 0
    num_system_prompts: int = 1
    turns: int = 1
    think_time_s: float = 10.0
    chunk_tokens: int = 64
    seed: int = 0
    name: str = "synthetic"

    def __post_init__(self) -> None:
        for field, low in (
            ("num_requests", 1), ("n", 1), ("system_prompt_tokens", 0),
            ("num_system_prompts", 1), ("turns", 1), ("chunk_tokens", 1),
        ):
            if getattr(self, field) < low:
                raise ValueError(f"{field} must be >= {low}, got {getattr(self, field)}")
        check_decoding(self.n, self.beam_width, self.spec_tokens, self.spec_accept)
        if self.beam_width > 1 and self.spec_tokens:
            raise ValueError("beam search and speculative decoding together are not modelled")
        if self.beam_width > 1 and self.n > self.beam_width:
            raise ValueError(f"n {self.n} > beam_width {self.beam_width}")
        if self.think_time_s < 0:
            raise ValueError(f"think_time_s must be >= 0, got {self.think_time_s}")

    def __repr__(self) -> str:
        """The dataclass repr less decoding fields at their defaults: a trace's source names
        its spec, and specs written before those fields existed keep their name."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _DECODING_DEFAULTS and value == _DECODING_DEFAULTS[f.name]:
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def shares_prefixes(self) -> bool:
        return self.system_prompt_tokens > 0 or self.turns > 1


def generate(spec: WorkloadSpec) -> pd.DataFrame:
    """The canonical trace (see workloads.trace) that spec describes."""
    rng = np.random.default_rng(spec.seed)
    conversations = -(-spec.num_requests // spec.turns)
    shape = (conversations, spec.turns)
    starts = spec.arrivals.times(rng, conversations)
    user = spec.prompt_tokens.sample(rng, conversations * spec.turns).reshape(shape)
    answer = spec.output_tokens.sample(rng, conversations * spec.turns).reshape(shape)
    think = rng.exponential(spec.think_time_s, size=(conversations, spec.turns - 1))
    system = rng.integers(spec.num_system_prompts, size=conversations)

    waits = np.concatenate((np.zeros((conversations, 1)), think), axis=1)
    arrival = starts[:, None] + np.cumsum(waits, axis=1)
    history = np.cumsum(user + answer, axis=1) - (user + answer)
    prompt = spec.system_prompt_tokens + history + user
    # Conversation-major order, then a stable sort: ties keep conversation and turn order.
    order = np.argsort(arrival.ravel(), kind="stable")[: spec.num_requests]
    hashes = _prefix_hashes(spec, prompt.ravel(), system, order) if spec.shares_prefixes else None
    return make_trace(
        arrival_s=arrival.ravel()[order],
        prompt_tokens=prompt.ravel()[order],
        output_tokens=answer.ravel()[order],
        n=np.full(len(order), spec.n, dtype=np.int64),
        prefix_hashes=hashes,
        failed=np.zeros(len(order), dtype=bool),
        beam_width=np.full(len(order), spec.beam_width, dtype=np.int64),
        spec_tokens=np.full(len(order), spec.spec_tokens, dtype=np.int64),
        spec_accept=np.full(len(order), spec.spec_accept if spec.spec_tokens else 0.0),
        attrs={
            "name": spec.name,
            "source": repr(spec),
            "format": "synthetic",
            "chunk_tokens": spec.chunk_tokens if spec.shares_prefixes else 0,
        },
    )


def _prefix_hashes(
    spec: WorkloadSpec, prompt: np.ndarray, system: np.ndarray, order: np.ndarray
) -> list[tuple[int, ...]]:
    """Chunk ids of the requests in order; ids are laid out as
    [system prompts' chunks | each conversation's own chunks | partial last chunks]."""
    chunk = spec.chunk_tokens
    system_full = spec.system_prompt_tokens // chunk
    own_full = prompt // chunk - system_full
    conversation_base = spec.num_system_prompts * system_full
    stride = int(own_full.max())
    partial_base = conversation_base + len(system) * stride
    hashes = []
    for i in order.tolist():
        conversation = i // spec.turns
        shared = int(system[conversation]) * system_full
        own = conversation_base + conversation * stride
        ids = (*range(shared, shared + system_full), *range(own, own + int(own_full[i])))
        if prompt[i] % chunk:
            ids += (partial_base + i,)
        hashes.append(ids)
    return hashes
