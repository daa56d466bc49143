"""Prefix-cache entries of the block-pool allocators, as a mixin: a prompt's chained keys, one per
entry of entry_units units; how much of a prompt the cache (and its host tier) holds; and the
registration of a sequence's entries once their KV is written (see block_pool)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from allocators.prefix import block_keys, iter_block_keys

if TYPE_CHECKING:  # the record of block_pool, which mixes this in
    from allocators.block_pool import _Seq


class PrefixEntries:
    """BlockPoolAllocator's prefix-cache keys and registration (a mixin: it works on the
    allocator's cache, units and sequences)."""

    def _entry_units(self, chunk_tokens: int) -> int:
        """Units per prefix-cache entry for a prompt hashed in chunks of chunk_tokens."""
        return 1

    def cached_prefix_tokens(self, prefix_hashes: Sequence[int] | None, chunk_tokens: int) -> int:
        if self._cache is None or not prefix_hashes or chunk_tokens <= 0:
            return 0
        entry = self._entry_units(chunk_tokens) * self._unit
        span = len(prefix_hashes) * chunk_tokens
        keys = iter_block_keys(prefix_hashes, chunk_tokens, entry, span)
        if self._host is None:
            return self._cache.leading(keys) * entry
        keys = list(keys)
        held = self._cache.leading(keys)
        return (held + self._host.leading(keys[held:])) * entry

    def _keys(
        self, prefix_hashes: Sequence[int] | None, chunk_tokens: int, entry_tokens: int,
        prompt_tokens: int,
    ) -> Sequence[int]:
        if self._cache is None or not prefix_hashes or chunk_tokens <= 0:
            return ()
        # Every hashed chunk but the last is a full chunk of the prompt, so its entries are keyed
        # even past the tokens allocated: a later prefill chunk (extend) registers them. The last
        # chunk may be partial, so it is keyed only within the prompt (tokens after it, generated
        # ones, are not what its hash stands for).
        limit = max(prompt_tokens, (len(prefix_hashes) - 1) * chunk_tokens)
        return tuple(block_keys(prefix_hashes, chunk_tokens, entry_tokens, limit))

    def _register(self, seq: _Seq) -> None:
        """Put the sequence's newly completed prompt entries, as far as their KV is written,
        into the prefix cache."""
        group = seq.entry_units
        start = seq.next_entry
        written = seq.length if seq.unwritten is None else seq.unwritten
        stop = min(len(seq.keys), written // (group * self._unit))
        if stop <= start:
            return
        keys = seq.keys[start:stop]
        units = seq.units[start * group : stop * group]
        fresh = self._cache.unregistered(keys)
        shared = self._shared
        if shared and not shared.keys().isdisjoint(units[: fresh * group]):
            fresh = next(i for i in range(fresh) if not shared.keys().isdisjoint(
                units[i * group : (i + 1) * group]))
        self._cache.register(keys[:fresh], units[: fresh * group], group)
        seq.next_entry = start + fresh
        if fresh < len(keys):
            # Another sequence cached this span first, or a fork shares part of it (an entry's
            # units must share one reference count). This copy stays private, and so do the
            # entries after it, so that every cached entry keeps its parent.
            seq.keys = ()
