"""Decoding patterns: what a request's sequences do to KV memory each decode step.

Parallel sampling (n > 1) needs nothing here: the scheduler forks n - 1 children from the prompt
once, and every sample decodes one token a step in lockstep. Two patterns do more, and the
scheduler asks the request's pattern (Group.decoding; None for plain sampling) what to do:

Beam search over W beams. Every step each beam decodes one token; then the W best of the W x W
continuations survive. The weights are random, so scores are modelled, seeded per (run seed,
request): each beam's W continuations take the top probabilities of a Dirichlet draw, and a
continuation scores its beam's cumulative log-probability plus its own. A beam with no surviving
continuation is freed at once; a beam with c > 1 is forked c - 1 times before the next step
writes (its blocks are shared; the allocator copies a shared, partly written block on write and
reports it). Beams of one request so share ever longer prefixes, as in a real beam search.

Speculative decoding with k draft tokens. A draft model proposes k tokens per sequence (the
executor prices its k decode steps); the target verifies them in one step that writes k + 1
slots (the last sampled token and the k drafts). Each draft is accepted with chance p until the
first rejection, seeded per (run seed, request), and the target's own next token comes with the
verification (the bonus token): a step yields accepted + 1 tokens, and the slots of the rejected
drafts are given back with the allocator's truncate. Fewer drafts are proposed where the output
has fewer tokens left or the step's token budget is short. Samples of one request (n > 1) accept
alike and stay in lockstep.
"""
from __future__ import annotations

from itertools import count
from typing import Iterator

import numpy as np

from harness.engine.batch import Truncation

DRAFT_MODEL = "llama3.2-1b"  # the draft a Llama-3-8B target is paired with
# Concentration of the modelled next-token distribution (one category more than the beam width
# stands for the rest of the vocabulary): below 1 most of the mass falls on few tokens.
BEAM_ALPHA = 0.5


class BeamSearch:
    """The beam scores of one request and the forks its last step decided."""

    is_beam = True

    def __init__(self, width: int, rng: np.random.Generator, seq_ids: Iterator[int]) -> None:
        self.width = width
        self.rng = rng
        self._seq_ids = seq_ids  # fresh ids for forked beams, shared by the run
        self.scores = np.zeros(width)
        self.parents: dict[int, int] = {}  # forks not made yet: child -> parent

    def step_tokens(self, g, budget: int) -> int:
        return 1

    def parent_of(self, g, child: int) -> int:
        return self.parents.get(child, g.seq_ids[0])

    def reset(self) -> None:
        """Preempted for recompute: the request starts again from its prompt."""
        self.scores = np.zeros(self.width)
        self.parents = {}

    def continuations(self) -> list[list[float]]:
        """The scores of each beam's continuations among the W best, best first (some beams
        have none, some several)."""
        width = self.width
        probs = self.rng.dirichlet(np.full(width + 1, BEAM_ALPHA), size=width)[:, :width]
        candidates = (self.scores[:, None] + np.log(probs)).ravel()
        best = np.argsort(-candidates, kind="stable")[:width]
        kept: list[list[float]] = [[] for _ in range(width)]
        for index in best.tolist():
            kept[index // width].append(float(candidates[index]))
        return kept

    def after_decode(self, g, allocator, freed: list[int], truncated: list[Truncation]) -> int:
        """After a decode step that did not finish g: free the beams left without a
        continuation and plan the forks of the others (made by the next step's schedule)."""
        if g.generated + 1 >= g.output:
            return 1
        beams = g.seq_ids[: g.num_live]
        kept = self.continuations()
        for sid, scores in zip(beams, kept):
            if not scores:
                allocator.free(sid)
                freed.append(sid)
        # A beam goes on as its best continuation; the others are forks of it, with new ids.
        survivors = [(sid, scores[0]) for sid, scores in zip(beams, kept) if scores]
        forks = [(next(self._seq_ids), sid, score)
                 for sid, scores in zip(beams, kept) for score in scores[1:]]
        self.parents = {child: parent for child, parent, _ in forks}
        self.scores = np.array([s for _, s in survivors] + [s for _, _, s in forks])
        g.seq_ids = (*(sid for sid, _ in survivors), *self.parents)
        g.num_live = len(survivors)
        return 1


class SpeculativeDecoding:
    """Draft tokens per step and the acceptance draws of one request."""

    is_beam = False

    def __init__(self, draft_tokens: int, accept: float, rng: np.random.Generator) -> None:
        self.draft_tokens = draft_tokens
        self.accept = accept
        self.rng = rng
        self._drafted = 0  # drafts of the step in flight

    def step_tokens(self, g, budget: int) -> int:
        """Slots per sequence this step: the last sampled token and the drafts, no more than
        the output still needs and the token budget holds."""
        drafts = min(self.draft_tokens, g.output - g.generated - 1, budget // g.n - 1)
        self._drafted = max(drafts, 0)
        return self._drafted + 1

    def parent_of(self, g, child: int) -> int:
        return g.seq_ids[0]

    def reset(self) -> None:
        self._drafted = 0

    def accepted(self, drafts: int) -> int:
        """Drafts accepted: each with chance accept, up to the first rejection."""
        if not drafts:
            return 0
        rejected = np.flatnonzero(self.rng.random(drafts) >= self.accept)
        return int(rejected[0]) if len(rejected) else drafts

    def after_decode(self, g, allocator, freed: list[int], truncated: list[Truncation]) -> int:
        """After the verification: roll back the rejected drafts; tokens each sample gained."""
        drafts = self._drafted
        self._drafted = 0
        accepted = self.accepted(drafts)
        if accepted < drafts:
            g.kv_len -= drafts - accepted
            for sid in g.seq_ids[: g.num_live]:
                allocator.truncate(sid, g.kv_len)
                truncated.append(Truncation(sid, g.kv_len))
        return accepted + 1


def decoding_for(rid: int, beam_width: int, spec_tokens: int, spec_accept: float, *,
                 seed: int, seq_ids: Iterator[int]):
    """The pattern of one request, or None for plain (and parallel) sampling."""
    if beam_width > 1:
        return BeamSearch(beam_width, np.random.default_rng([seed, rid, 1]), seq_ids)
    if spec_tokens > 0:
        return SpeculativeDecoding(spec_tokens, spec_accept, np.random.default_rng([seed, rid, 2]))
    return None


def beam_seq_ids(first: int) -> Iterator[int]:
    """Ids of forked beams, from first on (past every id the trace's requests take)."""
    return count(first)


def sequences(n: np.ndarray, beam_width: np.ndarray) -> np.ndarray:
    """Sequences each request runs at once: its beams, or its parallel samples."""
    return np.where(beam_width > 1, beam_width, n)
