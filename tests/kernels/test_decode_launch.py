"""The paged decode kernel's launch heuristics: split counts that fill the GPU in whole waves,
and the launch shape per block size, split count and cache dtype."""
import math

import pytest
from hypothesis import given, strategies as st

from kernels.decode_launch import (
    FP8_LONG_SPLIT_TOKENS,
    FP8_MAX_REGISTERS,
    FP8_MIN_SPLIT_TOKENS,
    FP8_PROGRAMS_PER_SM,
    LAST_WAVE_FILL,
    MIN_BALANCING_SPLIT_TOKENS,
    SHORT_TILE_TOKENS,
    TILE_TOKENS,
    choose_fp8_num_splits,
    choose_num_splits,
    default_config,
)
from kernels.split_kv import MAX_SPLITS


@given(batch=st.integers(1, 512), kv_heads=st.sampled_from([1, 8, 32]),
       context=st.integers(0, 1 << 20), sms=st.sampled_from([1, 108, 132]),
       per_sm=st.integers(1, 6), block_size=st.sampled_from([1, 16, 64, 256]))
def test_split_heuristic_bounds(batch, kv_heads, context, sms, per_sm, block_size):
    splits = choose_num_splits(batch, kv_heads, context, sms, block_size=block_size,
                               programs_per_sm=lambda s: per_sm)
    assert 1 <= splits <= MAX_SPLITS
    wave = per_sm * sms
    if batch * kv_heads <= wave:
        # One wave stays one wave, of splits of at least one tile.
        assert batch * kv_heads * splits <= wave
        single_tile = block_size % SHORT_TILE_TOKENS == 0 and \
            splits == -(-context // SHORT_TILE_TOKENS)
        assert splits <= max(1, -(-context // TILE_TOKENS)) or single_tile
    else:
        # Several waves: split for a fuller last wave, if any allowed split count gives one.
        assert splits == 1 or context // splits >= MIN_BALANCING_SPLIT_TOKENS

        def fill(s):
            waves = batch * kv_heads * s / wave
            return waves / math.ceil(waves)
        allowed = range(1, min(MAX_SPLITS, context // MIN_BALANCING_SPLIT_TOKENS) + 1)
        assert fill(splits) >= LAST_WAVE_FILL or all(fill(s) <= fill(splits) for s in allowed)


@pytest.mark.parametrize("batch, context, block_size, per_sm, expected", [
    (64, 32768, 16, 3, 3),   # 1.29 waves unsplit; 3.88 with 3 splits
    (128, 32768, 16, 3, 3),  # 2.59 waves unsplit; 7.76 with 3 splits
    (64, 32768, 1, 2, 1),    # 1.94 waves: the last one nearly full
    (32, 32768, 16, 3, 1),   # one wave of 2 programs per SM
    (8, 32768, 16, 3, 6),    # the most splits that still fit in one wave
    (1, 4096, 16, 3, 32),    # limited by 128-token splits
    (1, 4096, 64, 4, 64),    # 64 splits of one 64-token tile fit in one wave
    (64, 512, 16, 3, 1),     # balancing splits would be shorter than 1024 tokens
])
def test_split_heuristic_cases(batch, context, block_size, per_sm, expected):
    """H100 shapes (132 SMs, 8 KV heads) with the occupancies measured there."""
    assert choose_num_splits(batch, 8, context, 132, block_size=block_size,
                             programs_per_sm=lambda s: per_sm) == expected


@pytest.mark.parametrize("batch, context, expected", [
    (1, 4096, 16),    # 256-token splits
    (1, 32768, 32),   # 256 programs: 2 an SM
    (8, 4096, 4),
    (8, 32768, 4),    # 8 splits would fill the wave, but of 4096 tokens
    (32, 4096, 1),    # 256 programs unsplit
    (32, 32768, 2),   # 2 splits of 16384 tokens fill the wave
    (64, 4096, 1),
])
def test_fp8_split_cases(batch, context, expected):
    """The shapes measured on an H200 (132 SMs, 8 KV heads, 4 programs an SM), at the split
    counts that ran fastest there (8 x 32768 at block size 16: 2.1% behind 8 splits)."""
    assert choose_fp8_num_splits(batch, 8, context, 132, 4) == expected


@given(batch=st.integers(1, 512), kv_heads=st.sampled_from([1, 8, 32]),
       context=st.integers(0, 1 << 20), sms=st.sampled_from([1, 108, 132]),
       per_sm=st.integers(2, 6))
def test_fp8_split_bounds(batch, kv_heads, context, sms, per_sm):
    splits = choose_fp8_num_splits(batch, kv_heads, context, sms, per_sm)
    programs = batch * kv_heads
    if programs > per_sm * sms:
        assert splits == choose_num_splits(batch, kv_heads, context, sms,
                                           programs_per_sm=lambda s: per_sm)
        return
    # A power of two that keeps one wave; past FP8_PROGRAMS_PER_SM an SM only in long splits.
    assert splits & (splits - 1) == 0 and 1 <= splits <= MAX_SPLITS
    assert programs * splits <= per_sm * sms
    assert splits == 1 or context // splits >= FP8_MIN_SPLIT_TOKENS
    if splits > 1 and programs * splits > FP8_PROGRAMS_PER_SM * sms:
        assert context // splits >= FP8_LONG_SPLIT_TOKENS
    # Doubling again would break one of the rules.
    double = 2 * splits
    assert (double > MAX_SPLITS or programs * double > per_sm * sms
            or context // double < FP8_MIN_SPLIT_TOKENS
            or (programs * double > FP8_PROGRAMS_PER_SM * sms
                and context // double < FP8_LONG_SPLIT_TOKENS))


def test_default_config_tiles():
    # Unsplit batches over blocks of whole tiles take one table lookup per tile.
    for block_size in (64, 128, 256):
        assert block_size % default_config(block_size, 1).block_n == 0
        single = default_config(block_size, 64, max_context=4096)
        assert single.block_n == 64 and single.num_stages == 1
    for block_size in (1, 5, 16, 32):
        for num_splits in (1, 8):
            assert block_size % default_config(block_size, num_splits).block_n != 0
    assert default_config(64, 8, max_context=32768).block_n == 128


def test_fp8_launches_cap_registers_where_bf16_launches_do_not():
    for block_size, num_splits in ((16, 1), (16, 8), (64, 1), (256, 4)):
        fp8 = default_config(block_size, num_splits, max_context=32768, fp8=True)
        assert (fp8.block_n, fp8.num_stages, fp8.maxnreg) == (128, 2, FP8_MAX_REGISTERS)
        assert fp8.options()["maxnreg"] == FP8_MAX_REGISTERS
        assert "maxnreg" not in default_config(block_size, num_splits, 32768).options()
    # Splits of one short tile keep their one-stage launch, fp8 or not.
    assert default_config(64, 64, max_context=4096, fp8=True).maxnreg is None
