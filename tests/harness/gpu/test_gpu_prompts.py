"""Prompt tokens: seeded, never the padding id, equal where the trace's prefix hashes agree."""
from __future__ import annotations

import numpy as np

from harness.gpu.prompts import prompt_tokens


def test_prompts_are_seeded_and_avoid_the_padding_token():
    a = prompt_tokens(3, 500, 100, seed=1)
    assert np.array_equal(a, prompt_tokens(3, 500, 100, seed=1))
    assert not np.array_equal(a, prompt_tokens(4, 500, 100, seed=1))
    assert a.min() >= 1 and a.max() < 100


def test_equal_hashes_give_equal_chunks_and_a_partial_last_chunk_is_a_prefix():
    a = prompt_tokens(0, 40, 1000, seed=0, prefix_hashes=(7, 8, 9), chunk_tokens=16)
    b = prompt_tokens(1, 20, 1000, seed=0, prefix_hashes=(7, 8), chunk_tokens=16)
    c = prompt_tokens(2, 40, 1000, seed=0, prefix_hashes=(7, 5, 9), chunk_tokens=16)
    assert np.array_equal(a[:20], b)
    assert np.array_equal(a[:16], c[:16])
    assert not np.array_equal(a[16:32], c[16:32])
