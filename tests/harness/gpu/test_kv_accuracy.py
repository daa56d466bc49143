"""The fp8-against-bf16 accuracy comparison on the tiny model: a cache compared with its own
dtype differs in nothing, fp8 differs by about its rounding and keeps most greedy tokens."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from harness.gpu.executor import build_decoder  # noqa: E402
from harness.gpu.kv_accuracy import kv_dtype_accuracy  # noqa: E402
from harness.gpu.prompts import prompt_tokens  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402

STEPS = 24
# e4m3 keeps 3 mantissa bits: a value is off by at most 1/16 of itself; a layer's attention
# output averages such errors, and the next layer adds its own.
MAX_RELATIVE_ATTENTION_ERR = 2 / 16


@pytest.fixture(scope="module")
def bf16_decoder():
    return build_decoder(model_preset("tiny"), device="cpu", dtype="bfloat16", seed=0)


@pytest.fixture(scope="module")
def prompts():
    return [prompt_tokens(i, n, 256, seed=0) for i, n in enumerate((5, 40, 90))]


def test_a_cache_in_the_decoders_own_dtype_matches_the_reference_exactly(bf16_decoder, prompts):
    for seq in kv_dtype_accuracy(bf16_decoder, prompts, STEPS, kv_dtype="bf16", seed=0):
        assert seq.attention_max_abs_err == seq.logits_max_abs_err == 0.0
        assert seq.token_agreement == 1.0 and seq.first_divergence == STEPS


def test_fp8_kv_is_off_by_its_rounding_and_keeps_most_greedy_tokens(bf16_decoder, prompts):
    seqs = kv_dtype_accuracy(bf16_decoder, prompts, STEPS, kv_dtype="fp8", seed=0)
    assert [seq.prompt_tokens for seq in seqs] == [5, 40, 90]
    for seq in seqs:
        assert seq.steps == STEPS
        assert 0.0 < seq.attention_max_abs_err <= MAX_RELATIVE_ATTENTION_ERR * \
            seq.attention_max_abs
        assert 0.0 < seq.logits_max_abs_err < seq.logits_max_abs
        # Teacher-forced: a disagreement is where free-running fp8 generation would part.
        assert (seq.first_divergence < STEPS) == (seq.token_agreement < 1.0)
    assert sum(seq.token_agreement for seq in seqs) / len(seqs) >= 0.75


def test_bad_requests_are_refused(bf16_decoder, prompts):
    with pytest.raises(ValueError, match="step"):
        kv_dtype_accuracy(bf16_decoder, prompts, 0, kv_dtype="fp8", seed=0)
    with pytest.raises(ValueError, match="prompt"):
        kv_dtype_accuracy(bf16_decoder, [prompts[0][:0]], 4, kv_dtype="fp8", seed=0)
