"""The fitted cost model: it recovers the coefficients a profile was made from, it prices runs
whenever a profile of the run's model and GPU exists, and its bulk decode pricing is the very
arithmetic of step()."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engine.batch import Batch
from harness.engine.executor import CostModelExecutor, KVGeometry
from harness.engine.loop import simulate
from harness.model.config import AllocatorConfig, RunConfig
from harness.model.fitted import (FittedCostModel, ProfileError, fit, fitted_cost_model,
                                  price_rows, profile_path)
from reports.schema import PROFILE_COLUMNS

TRUE = FittedCostModel(
    overhead_s=2e-3, eager_overhead_s=1.5e-3, token_s=2e-6, knots=(64, 256, 1024, 4096),
    knot_slopes_s=(0.0, 20e-6, 40e-6, 0.0), decode_kv_token_s=3e-8,
    mixed_decode_kv_token_s=7e-8, prefill_kv_token_s=1e-8,
    prefill_pair_s=5e-11, longest_split_token_s=6e-7, decode_wave_seqs=32, block_size=16)
WITHOUT_LONGEST = dataclasses.replace(TRUE, longest_split_token_s=0.0, decode_wave_seqs=1)


def synthetic_profile(model: FittedCostModel, *, seed: int = 0, noise: float = 0.0,
                      block_size: int = 16) -> pd.DataFrame:
    """Rows of every kind spread over the ranges a real profile covers (decode contexts spread
    to 1.5 times their mean, and skewed: one long among short ones), priced by model."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in 2 ** np.arange(9):
        for context in 128 * 4 ** np.arange(6):
            rows.append((batch, 0, batch * context, 0, 0, context * (1 + (batch > 1) / 2)))
    for batch in (4, 16, 32, 64, 128, 256):
        for long in (8192, 65536):
            rows.append((batch, 0, long + (batch - 1) * 1024, 0, 0, long))
    for chunk in (16, 64, 256, 1024, 4096, 8192):
        for prior in (0, 1024, 4096, 16384, 65536):
            rows.append((0, chunk, 0, prior + chunk, chunk * prior + chunk * (chunk + 1) // 2, 0))
    for decodes in (4, 32, 128):
        for context in (1024, 8192):
            for chunk in (16, 256, 2048):
                rows.append((decodes, chunk, decodes * context, chunk,
                             chunk * (chunk + 1) // 2, context * 3 // 2))
    frame = pd.DataFrame(rows, columns=["decode_tokens", "prefill_tokens",
                                        "decode_context_tokens", "prefill_context_tokens",
                                        "prefill_attention_pairs", "decode_max_context"])
    frame["decode_max_context"] = frame["decode_max_context"].astype(np.int64)
    frame["kind"] = np.where(frame.prefill_tokens == 0, "decode",
                             np.where(frame.decode_tokens == 0, "prefill", "mixed"))
    frame["block_size"] = block_size
    frame["batch"] = frame.decode_tokens + (frame.prefill_tokens > 0)
    frame["kv_bytes_read"] = 0
    seconds = price_rows(model, frame) * (1 + noise * rng.standard_normal(len(frame)))
    frame["measured_ms"] = frame["min_ms"] = frame["max_ms"] = seconds * 1e3
    frame["repeats"] = 5
    return frame[list(PROFILE_COLUMNS)]


COEFFICIENTS = ("overhead_s", "eager_overhead_s", "token_s", "decode_kv_token_s",
                "mixed_decode_kv_token_s", "prefill_kv_token_s", "prefill_pair_s",
                "longest_split_token_s")


def _assert_recovered(model: FittedCostModel, true: FittedCostModel) -> None:
    for name in COEFFICIENTS:
        assert getattr(model, name) == pytest.approx(getattr(true, name), rel=1e-4, abs=1e-12)
    assert model.knot_slopes_s == pytest.approx(true.knot_slopes_s, rel=1e-4, abs=1e-12)
    assert model.decode_wave_seqs == true.decode_wave_seqs
    assert model.fit_err_median < 1e-6


def test_fit_recovers_the_coefficients_of_an_exact_profile():
    _assert_recovered(fit(synthetic_profile(TRUE), knots=TRUE.knots), TRUE)


@pytest.mark.parametrize("wave_seqs", [1, 8, 64, 256])
def test_fit_recovers_the_longest_split_at_any_wave(wave_seqs):
    true = dataclasses.replace(TRUE, decode_wave_seqs=wave_seqs)
    _assert_recovered(fit(synthetic_profile(true), knots=TRUE.knots), true)


def test_a_profile_without_the_longest_context_fits_without_its_term():
    """Profiles measured before decode_max_context existed."""
    old = synthetic_profile(WITHOUT_LONGEST).drop(columns=["decode_max_context"])
    model = fit(old, knots=TRUE.knots)
    _assert_recovered(model, WITHOUT_LONGEST)
    assert (model.longest_split_token_s, model.decode_wave_seqs) == (0.0, 1)


def test_rows_without_the_longest_context_are_not_priced_as_if_it_were_free():
    rows = synthetic_profile(TRUE).drop(columns=["decode_max_context"])
    with pytest.raises(ProfileError, match="decode_max_context"):
        price_rows(TRUE, rows)
    assert (price_rows(WITHOUT_LONGEST, rows) > 0).all()


def test_skewed_decodes_cost_more_than_even_ones_of_the_same_keys():
    kw = dict(prefill_tokens=0, prefill_context_tokens=0, prefill_attention_pairs=0)
    for batch in (2, 16, 32, 200):
        even = TRUE.step_s(decode_tokens=batch, decode_context_tokens=batch * 1000,
                           decode_max_context=1000, **kw)
        skew = TRUE.step_s(decode_tokens=batch, decode_context_tokens=batch * 1000,
                           decode_max_context=1000 * batch // 2, **kw)
        assert skew - even == pytest.approx(TRUE.longest_split_token_s * 1000
                                            * (batch // 2 - 1) * min(batch, 32) / 32)


def test_fit_on_noisy_rows_stays_close_and_nonnegative():
    model = fit(synthetic_profile(TRUE, noise=0.03, seed=3))
    values = [getattr(model, name) for name in COEFFICIENTS] + list(model.knot_slopes_s)
    assert min(values) >= 0
    assert model.overhead_s == pytest.approx(TRUE.overhead_s, rel=0.2)
    assert model.decode_kv_token_s == pytest.approx(TRUE.decode_kv_token_s, rel=0.2)
    assert model.fit_err_median < 0.05


def test_fit_takes_the_nearest_profiled_block_size():
    slow = dataclasses.replace(TRUE, decode_kv_token_s=6e-8)
    frame = pd.concat([synthetic_profile(TRUE, block_size=16),
                       synthetic_profile(slow, block_size=128)])
    assert fit(frame, block_size=32, knots=TRUE.knots).block_size == 16
    chosen = fit(frame, block_size=256, knots=TRUE.knots)
    assert chosen.block_size == 128
    assert chosen.decode_kv_token_s == pytest.approx(6e-8, rel=1e-4)


def test_a_profile_without_the_batch_columns_is_refused():
    with pytest.raises(ProfileError, match="decode_context_tokens"):
        fit(synthetic_profile(TRUE).drop(columns=["decode_context_tokens"]))


def _write_profile(results_dir, config, model=TRUE):
    path = profile_path(config.model.name, config.gpu.name, results_dir, config.tp)
    path.write_text("# device: test\n" + synthetic_profile(model).to_csv(index=False))
    return path


def _geometry(config):
    return KVGeometry(16, 1, 100_000)


def test_the_executor_uses_a_profile_of_the_runs_model_and_gpu(tmp_path):
    config = RunConfig()
    path = _write_profile(tmp_path, config)
    assert path.name == "profile_llama3-8b_h100.csv"
    executor = CostModelExecutor(config, _geometry(config), results_dir=tmp_path)
    assert executor.details["cost_model"] == "fitted:profile_llama3-8b_h100.csv"
    batch = Batch()
    batch.add_decode(0, 0, 5000)
    batch.add_prefill(1, 1, 100, 300, samples=True)
    assert executor.step(batch) == pytest.approx(TRUE.step_s(
        prefill_tokens=300, decode_tokens=1, prefill_context_tokens=400,
        decode_context_tokens=5000, prefill_attention_pairs=batch.prefill_attention_pairs,
        decode_max_context=5000))


def test_the_roofline_prices_runs_without_a_profile(tmp_path):
    config = RunConfig()
    _write_profile(tmp_path, dataclasses.replace(config, model=config.model.__class__(
        **{**dataclasses.asdict(config.model), "name": "other"})))
    assert fitted_cost_model(config, 16, results_dir=tmp_path) is None
    executor = CostModelExecutor(config, _geometry(config), results_dir=tmp_path)
    assert executor.details["cost_model"] == "roofline"
    with_tp = dataclasses.replace(config, tp=2)
    _write_profile(tmp_path, config)
    assert fitted_cost_model(with_tp, 16, results_dir=tmp_path) is None  # one GPU's profile
    roofline = CostModelExecutor(config, _geometry(config), results_dir=tmp_path, roofline=True)
    assert roofline.details["cost_model"] == "roofline"


def test_a_tensor_parallel_run_is_priced_by_the_profile_of_its_width(tmp_path):
    config = dataclasses.replace(RunConfig(), tp=2)
    path = _write_profile(tmp_path, config)
    assert path.name == "profile_llama3-8b_h100_tp2.csv"
    executor = CostModelExecutor(config, _geometry(config), results_dir=tmp_path)
    assert executor.details["cost_model"] == "fitted:profile_llama3-8b_h100_tp2.csv"
    one_gpu = dataclasses.replace(config, tp=1)
    assert fitted_cost_model(one_gpu, 16, results_dir=tmp_path) is None


def test_decode_steps_equal_step_for_decode_only_batches(tmp_path):
    config = RunConfig()
    _write_profile(tmp_path, config)
    executor = CostModelExecutor(config, _geometry(config), results_dir=tmp_path)
    assert executor.model.longest_split_token_s > 0
    for decode_tokens in (1, 7, 100, 300, 5000):
        contexts = np.array([decode_tokens * 3, 40_000, 1_234_567], dtype=np.int64)
        longest = np.array([3, 3_000, 77_777], dtype=np.int64)
        bulk = executor.decode_steps(decode_tokens, contexts, longest).tolist()
        for context, most, priced in zip(contexts.tolist(), longest.tolist(), bulk):
            batch = Batch()
            batch.decode_tokens, batch.decode_context_tokens = decode_tokens, context
            batch.decode_max_context = most
            assert executor.step(batch) == priced


def test_a_simulated_run_records_the_model_that_priced_it(tmp_path, make_trace):
    config = RunConfig(allocator=AllocatorConfig.of("paged"), budget_slots_override=50_000)
    _write_profile(tmp_path, config)
    trace = make_trace([300, 1200, 40], [20, 5, 60])
    fitted = simulate(config, trace, executor_factory=lambda c, g: CostModelExecutor(
        c, g, results_dir=tmp_path))
    assert fitted.info["executor_details"]["cost_model"] == "fitted:profile_llama3-8b_h100.csv"
    stepwise = simulate(config, trace, decode_runs=False, executor_factory=lambda c, g:
                        CostModelExecutor(c, g, results_dir=tmp_path))
    assert fitted.steps.equals(stepwise.steps)
    roofline = simulate(config, trace, executor_factory=lambda c, g: CostModelExecutor(
        c, g, results_dir=tmp_path / "none"))
    assert roofline.info["executor_details"]["cost_model"] == "roofline"


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(allocator=st.sampled_from(["static", "paged", "segmented", "hybrid"]),
       seed=st.integers(0, 2**16), window=st.sampled_from([None, 50]))
def test_bulk_pricing_of_decode_runs_equals_pricing_every_step(
        tiny_config, random_trace, allocator, seed, window, tmp_path_factory):
    """With the longest split priced, decode runs priced in bulk give the results of pricing
    every step's batch."""
    config = tiny_config(allocator, slots=8192, window=window)
    results = tmp_path_factory.mktemp("profile")
    _write_profile(results, config)
    trace = random_trace(np.random.default_rng(seed), 40, max_output=200, rate_per_s=20.0,
                         max_n=2)
    runs = [simulate(config, trace, decode_runs=runs, executor_factory=lambda c, g:
                     CostModelExecutor(c, g, results_dir=results)) for runs in (True, False)]
    assert runs[0].info["executor_details"]["longest_split_token_s"] > 0
    assert runs[0].steps.equals(runs[1].steps)


def test_an_fp8_run_scales_the_bf16_profiles_kv_reads(tmp_path):
    """The profile is measured over a bf16 cache: fp8 reads half the bytes per KV token, and
    decode attention reads them at the measured bandwidth ratio."""
    config = RunConfig()
    _write_profile(tmp_path, config)
    bf16 = fitted_cost_model(config, 16, results_dir=tmp_path)
    fp8 = fitted_cost_model(dataclasses.replace(config, kv_dtype="fp8"), 16,
                            results_dir=tmp_path, decode_bandwidth_ratio=0.6)
    assert fp8.decode_kv_token_s == pytest.approx(bf16.decode_kv_token_s * 0.5 / 0.6)
    assert fp8.mixed_decode_kv_token_s == pytest.approx(bf16.mixed_decode_kv_token_s * 0.5 / 0.6)
    assert fp8.prefill_kv_token_s == pytest.approx(bf16.prefill_kv_token_s * 0.5)
    assert fp8.swap_token_s == pytest.approx(bf16.swap_token_s * 0.5)
    assert (fp8.overhead_s, fp8.token_s, fp8.prefill_pair_s) == (
        bf16.overhead_s, bf16.token_s, bf16.prefill_pair_s)


def test_an_fp8_run_records_the_bandwidth_ratio_that_priced_it(tmp_path):
    (tmp_path / "paged_decode_fp8_h100.csv").write_text(
        "# device: test\nbatch,context,block_size,layout,impl,median_us,kv_bytes,bandwidth_gbs,"
        "copy_bandwidth_gbs,max_abs_err,kv_dtype\n1,64,16,shuffled,paged,1,2,100,1,0,bf16\n"
        "1,64,16,shuffled,paged,1,1,70,1,0,fp8\n")
    config = RunConfig(kv_dtype="fp8")
    roofline = CostModelExecutor(config, _geometry(config), results_dir=tmp_path)
    assert roofline.details["kv_decode_bandwidth_ratio"] == pytest.approx(0.7)
    assert roofline.details["kv_decode_source"] == "paged_decode_fp8_h100.csv"
    _write_profile(tmp_path, config)
    fitted = CostModelExecutor(config, _geometry(config), results_dir=tmp_path)
    assert fitted.details["cost_model"].startswith("fitted")
    assert fitted.details["kv_decode_bandwidth_ratio"] == pytest.approx(0.7)
    bf16 = CostModelExecutor(RunConfig(), _geometry(config), results_dir=tmp_path)
    assert "kv_decode_bandwidth_ratio" not in bf16.details
