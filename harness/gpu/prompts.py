"""Prompt token ids for trace requests, which carry lengths and prefix hashes but no text.

Tokens are drawn from seeded generators so a run is reproducible. Where a trace gives prefix
hashes, chunk i of every prompt with hash h at position i gets the same tokens (seeded by seed,
i and h), so a prefix-cache hit in the allocator is a real one: the cached K/V are exactly what
the prompt would have computed. Tokens past the hashed chunks are seeded by the request id.
Token 0 is left out: the transformers baseline pads with it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_MASK = (1 << 63) - 1


def prompt_tokens(
    request_id: int,
    num_tokens: int,
    vocab_size: int,
    *,
    seed: int,
    prefix_hashes: Sequence[int] | None = None,
    chunk_tokens: int = 0,
) -> np.ndarray:
    """int64 [num_tokens] token ids in 1..vocab_size-1."""
    out = np.empty(num_tokens, dtype=np.int64)
    filled = 0
    if prefix_hashes and chunk_tokens > 0:
        for index, h in enumerate(prefix_hashes):
            if filled >= num_tokens:
                break
            take = min(chunk_tokens, num_tokens - filled)
            rng = np.random.default_rng([seed, 1, index, int(h) & _MASK])
            out[filled : filled + take] = rng.integers(1, vocab_size, chunk_tokens)[:take]
            filled += take
    if filled < num_tokens:
        rng = np.random.default_rng([seed, 2, int(request_id)])
        out[filled:] = rng.integers(1, vocab_size, num_tokens - filled)
    return out
