"""The replica-count search: the smallest count that serves, found in few runs."""
from __future__ import annotations

import numpy as np

from harness.cluster.capacity import serves, smallest_replicas


def test_the_search_finds_the_smallest_serving_count(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(8), 80, max_prompt=2000, max_output=100,
                         rate_per_s=40.0)
    config = tiny_config("paged", slots=8192, max_num_seqs=4)
    search = smallest_replicas(config, trace, slo_ttft_s=0.5, max_replicas=16)
    n = search.replicas
    assert n is not None and n > 1
    assert serves(search.runs[n], 0.5)
    assert not serves(search.runs[n - 1], 0.5)  # the search ran the count just below
    assert len(search.runs) <= 2 * 4 + 1


def test_no_count_serves_an_impossible_slo(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(9), 10)
    search = smallest_replicas(tiny_config("paged"), trace, slo_ttft_s=1e-9, max_replicas=4)
    assert search.replicas is None and sorted(search.runs) == [1, 2, 4]
