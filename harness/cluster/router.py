"""Routers: which replica takes an arriving request.

- round-robin: replicas in turn.
- least-outstanding: the fewest requests waiting, running or swapped (Vidur's global scheduler
  of that name, and the usual load balancer default).
- least-kv: the smallest share of the KV budget allocated now; outstanding requests break ties.
- prefix-aware: cache affinity balanced against load, after the cache-aware policy of SGLang's
  router (sgl-router, now the SMG gateway: docs/getting-started/load-balancing.md): while the
  load is balanced, route to the replica whose prefix cache holds the longest prefix of the
  request when that prefix is a large enough share of the prompt, otherwise to the least loaded
  replica; once the load is imbalanced (the busiest replica has both more than an absolute number
  of extra requests and more than a multiple of the idlest one's), route to the least loaded
  replica whatever the cache holds. Mooncake's scheduler makes the same trade by another
  measure (estimated TTFT: queueing plus prefill of the uncached tokens).

Ties go to the lowest replica index, so a run is deterministic.
"""
from __future__ import annotations

from typing import Sequence

from harness.engine.loop import Replica
from harness.engine.sequences import Group

# The SGLang router's documented defaults (see the module docstring).
CACHE_THRESHOLD = 0.3  # least share of the prompt cached for cache affinity to win
BALANCE_ABS_THRESHOLD = 64  # requests: the busiest replica's excess over the idlest ...
BALANCE_REL_THRESHOLD = 1.5  # ... and its ratio to it, beyond which load alone decides


def outstanding(replica: Replica) -> int:
    """Requests the replica holds: waiting, running or swapped."""
    sched = replica.scheduler
    return len(sched.waiting) + len(sched.running) + len(sched.swapped)


def kv_load(replica: Replica) -> float:
    """The share of the replica's KV budget allocated to requests (prefix-cached slots that
    nothing references are evictable, so they do not count)."""
    usage = replica.allocator.usage()
    return (usage.live + usage.reserved + usage.internal) / max(1, usage.budget)


def _least(values: Sequence) -> int:
    return min(range(len(values)), key=values.__getitem__)


class Router:
    """Chooses a replica index for each arriving request."""

    def __init__(self, replicas: Sequence[Replica], chunk_tokens: int) -> None:
        self.replicas = replicas
        self.chunk_tokens = chunk_tokens  # tokens per prefix hash of the trace

    def choose(self, group: Group) -> int:
        raise NotImplementedError


class RoundRobin(Router):
    name = "round-robin"

    def __init__(self, replicas: Sequence[Replica], chunk_tokens: int) -> None:
        super().__init__(replicas, chunk_tokens)
        self._next = 0

    def choose(self, group: Group) -> int:
        chosen = self._next
        self._next = (chosen + 1) % len(self.replicas)
        return chosen


class LeastOutstanding(Router):
    name = "least-outstanding"

    def choose(self, group: Group) -> int:
        return _least([outstanding(r) for r in self.replicas])


class LeastKV(Router):
    name = "least-kv"

    def choose(self, group: Group) -> int:
        return _least([(kv_load(r), outstanding(r)) for r in self.replicas])


class PrefixAware(Router):
    name = "prefix-aware"

    def choose(self, group: Group) -> int:
        loads = [outstanding(r) for r in self.replicas]
        least = _least(loads)
        busiest, idlest = max(loads), loads[least]
        if busiest - idlest > BALANCE_ABS_THRESHOLD and busiest > BALANCE_REL_THRESHOLD * idlest:
            return least
        if not group.prefix_hashes:
            return least
        cached = [r.allocator.cached_prefix_tokens(group.prefix_hashes, self.chunk_tokens)
                  for r in self.replicas]
        # The longest cached prefix; among equals, the least loaded replica.
        best = _least([(-tokens, load) for tokens, load in zip(cached, loads)])
        if min(cached[best], group.prompt) >= CACHE_THRESHOLD * group.prompt > 0:
            return best
        return least


ROUTERS: dict[str, type[Router]] = {
    cls.name: cls for cls in (RoundRobin, LeastOutstanding, LeastKV, PrefixAware)
}


def make_router(name: str, replicas: Sequence[Replica], chunk_tokens: int) -> Router:
    return ROUTERS[name](replicas, chunk_tokens)
