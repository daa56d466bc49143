"""A verification's chunk and what it keeps: the target's tokens replace the drafts, and every
verified token that differs from its draft is counted."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from harness.gpu.host_state import TokenStore  # noqa: E402
from harness.gpu.speculative import Verification, keep_sampled  # noqa: E402


def test_verified_tokens_replace_the_drafts_and_differences_are_counted():
    tokens = TokenStore()
    tokens.start(1, np.array([5, 6, 7]), 16)  # token 7 at position 2: sampled, not yet written
    tokens.start(2, np.array([3, 4]), 16)
    tokens.extend(1, np.array([8, 9]))  # two drafts
    verification = Verification(1, start=2, context=5, row=0)
    work = verification.work(tokens)
    assert verification.drafts == 2
    assert work.tokens.tolist() == [7, 8, 9] and (work.start, work.context) == (2, 5)
    assert work.samples == 3  # the target's token after the last token and after each draft
    # The target agrees with the first draft, not with the second; seq 2 decodes one token.
    assert keep_sampled(tokens, [verification], np.array([1, 1, 1, 2]),
                        np.array([8, 4, 11, 12])) == 1
    assert tokens.ids(1).tolist() == [5, 6, 7, 8, 4, 11]
    assert tokens.ids(2).tolist() == [3, 4, 12]
