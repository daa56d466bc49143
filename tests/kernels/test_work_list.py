"""The balanced decode kernel's work lists: every key once, equal shares, fixed bounds."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels.work_list import ITEMS_ALIGN, WorkListPlan, plan_for


def parse(plan: WorkListPlan, data: np.ndarray, rows: int):
    """(row offsets, program offsets, items [n, 3] of row, start, end) of a built list."""
    by_row = data[: rows + 1]
    by_program = data[rows + 1 : rows + plan.programs + 2]
    items = data[rows + plan.programs + 2 :].reshape(-1, 3)[: by_row[-1]]
    return by_row, by_program, items


@settings(max_examples=300, deadline=None)
@given(lens=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
       programs=st.integers(1, 70), tile=st.sampled_from([1, 16, 64, 128]),
       window=st.one_of(st.none(), st.integers(1, 3000)))
def test_every_key_once_in_equal_shares(lens, programs, tile, window):
    plan = WorkListPlan(programs, tile, window)
    rows = len(lens)
    data = plan.build(np.array(lens))
    assert data.dtype == np.int32 and len(data) == plan.size(rows)
    by_row, by_program, items = parse(plan, data, rows)
    n = len(items)
    assert n <= max(0, rows + programs - 1) and plan.max_items(rows) % ITEMS_ALIGN == 0
    assert by_row[0] == 0 and by_program[0] == 0 and by_program[-1] == n
    assert (np.diff(by_row) >= 0).all() and (np.diff(by_program) >= 0).all()
    firsts = [0 if window is None else max(0, length - window) for length in lens]
    for row, length in enumerate(lens):
        mine = items[by_row[row] : by_row[row + 1]]
        assert (mine[:, 0] == row).all()
        if length == 0:
            assert len(mine) == 0
            continue
        # Contiguous, in order, from the first key read to the last, cut at tile boundaries.
        assert mine[0, 1] == firsts[row] and mine[-1, 2] == length
        assert (mine[1:, 1] == mine[:-1, 2]).all() and (mine[:, 1] < mine[:, 2]).all()
        assert (mine[1:, 1] % tile == 0).all()
    # Each program gets at most L = ceil(total tiles / programs) tiles, L a whole number of
    # tiles, and at most one item per row.
    tiles = -(-items[:, 2] // tile) - items[:, 1] // tile
    share = -(-int(tiles.sum()) // programs) if n else 0
    for p in range(programs):
        mine = slice(by_program[p], by_program[p + 1])
        assert tiles[mine].sum() <= share
        assert len(set(items[mine, 0].tolist())) == by_program[p + 1] - by_program[p]


def test_one_long_row_among_short_ones_is_shared_out():
    plan = WorkListPlan(programs=8, tile_tokens=128)
    lens = np.array([8192] + [1000] * 31)
    by_row, by_program, items = parse(plan, plan.build(lens), 32)
    # 312 tiles, 39 a program: the long row's 64 go to the first two, the short rows' to all.
    assert by_row[1] - by_row[0] == 2 and items[by_row[1] - 1].tolist() == [0, 39 * 128, 8192]
    assert (np.diff(by_program) > 0).all()


def test_rows_without_keys_and_programs_without_items():
    plan = WorkListPlan(programs=16, tile_tokens=16)
    by_row, by_program, items = parse(plan, plan.build(np.array([0, 5, 0, 20])), 4)
    assert by_row.tolist() == [0, 0, 1, 1, 3]
    assert items.tolist() == [[1, 0, 5], [3, 0, 16], [3, 16, 20]]
    assert by_program.tolist() == [0, 1, 2] + [3] * 14
    empty = parse(plan, plan.build(np.zeros(3, np.int64)), 3)
    assert empty[0].tolist() == [0] * 4 and empty[1].tolist() == [0] * 17


def test_builds_into_a_larger_buffer():
    plan = WorkListPlan(programs=4, tile_tokens=16, window=30)
    buffer = np.full(plan.size(8) + 5, -7, np.int32)
    data = plan.build(np.array([100, 3]), out=buffer)
    assert np.shares_memory(data, buffer) and len(data) == plan.size(2)
    _, _, items = parse(plan, data, 2)
    assert items.tolist() == [[0, 70, 80], [0, 80, 96], [0, 96, 100], [1, 0, 3]]


@pytest.mark.parametrize("rows", [1, 15, 16, 17, 256])
def test_sizes_follow_the_row_count(rows):
    plan = WorkListPlan(programs=33, tile_tokens=128)
    assert plan.max_items(rows) >= rows + 33 - 1
    assert plan.size(rows) == rows + 33 + 2 + 3 * plan.max_items(rows)


def test_a_plan_applies_to_skewed_rows_only_above_its_skew():
    """skew 0: every step with decode rows; skew 3: a longest context over three times the mean
    (under a window, of the keys each row reads), or one row; never to no rows."""
    always = WorkListPlan(programs=4, tile_tokens=16)
    auto = WorkListPlan(programs=4, tile_tokens=16, skew=3.0)
    uniform, skewed = np.array([1000] * 8), np.array([8192] + [1000] * 7)
    assert always.applies(uniform) and always.applies(skewed)
    assert not auto.applies(uniform) and auto.applies(skewed)
    assert not auto.applies(np.array([301, 100, 100, 100]))
    assert auto.applies(np.array([301, 10, 10, 10]))
    assert not always.applies(np.array([], np.int64)) and not auto.applies(np.array([], np.int64))
    assert auto.applies(np.array([5])) and not auto.applies(np.array([5, 5]))
    assert plan_for(auto, skewed) is auto and plan_for(auto, uniform) is None
    assert plan_for(None, skewed) is None
    windowed = WorkListPlan(programs=4, tile_tokens=16, window=1000, skew=3.0)
    assert not windowed.applies(skewed)  # the long row reads only its last 1,000 keys
