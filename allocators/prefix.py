"""Prefix-cache keys: turn a trace's chunk hashes into one chained key per cacheable unit."""
from __future__ import annotations

from typing import Iterator, Sequence


def block_keys(
    prefix_hashes: Sequence[int] | None, chunk_tokens: int, unit_tokens: int, num_tokens: int
) -> list[int]:
    return list(iter_block_keys(prefix_hashes, chunk_tokens, unit_tokens, num_tokens))


def iter_block_keys(
    prefix_hashes: Sequence[int] | None, chunk_tokens: int, unit_tokens: int, num_tokens: int
) -> Iterator[int]:
    """Chained keys of the full units of unit_tokens tokens covered by known chunk hashes.

    Unit j covers tokens [j*unit_tokens, (j+1)*unit_tokens); it is cacheable when it lies inside
    both the first num_tokens tokens and the hashed chunks. Its key chains the previous unit's key
    with every chunk hash it overlaps and its own index, so equal keys mean equal prefixes.
    """
    if not prefix_hashes or chunk_tokens <= 0:
        return
    covered = min(num_tokens, len(prefix_hashes) * chunk_tokens)
    key = 0
    for j in range(covered // unit_tokens):
        first = j * unit_tokens // chunk_tokens
        last = ((j + 1) * unit_tokens - 1) // chunk_tokens
        key = hash((key, j, tuple(prefix_hashes[first : last + 1])))
        yield key
