"""A request inside the engine: its sequences and how far prefill and decode have come.

One trace row becomes one Group: the parent sequence that holds the prompt, and for n > 1 the
n - 1 children forked from it after prefill (parallel sampling; for beam search n is the beam
width). Every sample decodes in lockstep and produces output_tokens tokens; prefill produces the
first one. A beam search replaces its seq_ids as beams are freed and forked (harness.engine.
decoding).
"""
from __future__ import annotations

from typing import Sequence


class Group:
    """Progress of one request. Token accounting follows vLLM: prefill writes the KV of its
    target tokens and samples the next token; each decode step writes the KV of the last sampled
    token and samples one more, so a finished sample holds prompt + output - 1 tokens of KV."""

    __slots__ = (
        "rid",
        "prompt",
        "output",
        "n",
        "prefix_hashes",
        "seq_ids",
        "generated",
        "target",
        "computed",
        "kv_len",
        "kv_start",
        "num_live",
        "fork_len",
        "first_token_done",
        "arrival_s",
        "decoding",
    )

    def __init__(
        self,
        rid: int,
        prompt: int,
        output: int,
        n: int,
        prefix_hashes: Sequence[int] | None,
        seq_ids: tuple[int, ...],
        arrival_s: float = 0.0,
        decoding=None,
    ) -> None:
        self.rid = rid
        self.prompt = prompt
        self.output = output
        self.n = n
        self.prefix_hashes = prefix_hashes
        self.seq_ids = seq_ids  # parent first; children are allocated when forked
        self.generated = 0  # tokens sampled so far, per sample
        self.target = prompt  # tokens the next prefill computes (prompt + generated on recompute)
        self.computed = 0  # tokens of the target whose KV is written
        self.kv_len = 0  # KV length of every sequence of the group
        # Under a sliding window: the first token any sample's next query reads (the
        # allocator was told; tokens before it are let go or stale, and never move in a swap).
        self.kv_start = 0
        self.num_live = 0  # sequences allocated: 0 while queued, 1 until forked, then up to n
        self.fork_len = 0  # KV length when the children were forked (their shared prefix)
        self.first_token_done = False
        self.arrival_s = arrival_s  # what a deadline-ordered policy counts from
        # Beam search or speculative decoding (harness.engine.decoding); None: sampling.
        self.decoding = decoding

    @property
    def final_tokens(self) -> int:
        """What the engine knows a sample can reach: prompt + max output (the trace's output)."""
        return self.prompt + self.output

    @property
    def live_seq_ids(self) -> tuple[int, ...]:
        return self.seq_ids[: self.num_live]

    @property
    def in_prefill(self) -> bool:
        return self.computed < self.target

    def min_kv_slots(self, window: int | None = None) -> int:
        """The least KV the request needs at once: its prompt when admitted, and when finished
        the shared prompt plus each sample's own tokens (under a sliding window, only what lies
        in the window of a finished sample)."""
        final = self.prompt + max(self.output - 1, 0)  # the KV length of a finished sample
        first = 0 if window is None else max(0, final - window)  # its window start
        shared = max(0, self.prompt - first)
        own = final - max(self.prompt, first)
        return max(self.prompt, shared + self.n * own)

    def swap_tokens(self) -> int:
        """KV tokens a swap moves, from the window start on: the shared prefix once, each
        child's own tokens once."""
        own = self.kv_len - max(self.fork_len, self.kv_start)
        return self.kv_len - self.kv_start + (self.num_live - 1) * own

    def reset_for_recompute(self) -> None:
        """After preemption by recompute: the KV is gone. A single sample keeps its tokens and
        recomputes prompt + generated in one prefill (vLLM's recompute); parallel samples and
        beams cannot be rebuilt from one prefill, so the group restarts from its prompt."""
        if self.n > 1:
            self.generated = 0
        if self.decoding is not None:
            self.decoding.reset()
        self.num_live = 0
        self.fork_len = 0
        self.target = self.prompt + self.generated
        self.computed = 0
        self.kv_len = 0
        self.kv_start = 0
