"""Shared pieces of the GPU-executor tests: a tiny float32 decoder and small ragged traces.

Without a GPU the Triton kernels run in the interpreter, which must be chosen before
kernels.paged_decode is imported (as in tests/kernels/conftest.py).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from harness.gpu.executor import build_decoder  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from workloads.trace import make_trace  # noqa: E402


def _small_trace(seed: int, num: int, *, n=None, prefix_hashes=None, chunk_tokens=0,
                max_prompt=40, max_output=12):
    rng = np.random.default_rng(seed)
    return make_trace(
        arrival_s=np.sort(rng.uniform(0.0, 0.01, num)),
        prompt_tokens=rng.integers(3, max_prompt, num),
        output_tokens=rng.integers(2, max_output, num),
        n=np.ones(num, np.int64) if n is None else np.asarray(n, np.int64),
        prefix_hashes=prefix_hashes,
        failed=np.zeros(num, bool),
        attrs={"name": f"small-{seed}", "source": "test", "format": "synthetic",
               "chunk_tokens": chunk_tokens},
    )


@pytest.fixture(scope="session")
def tiny_decoder():
    return build_decoder(model_preset("tiny"), device="cpu", dtype="float32", seed=0)


@pytest.fixture(scope="session")
def small_trace():
    """small_trace(seed, num, *, n=None, prefix_hashes=None, chunk_tokens=0, max_prompt=40,
    max_output=12): a trace of ragged requests arriving within 10 ms."""
    return _small_trace


@pytest.fixture
def host_tables():
    """host_tables(tables, device="cpu") -> (row ids, TableRows, DeviceTables): the block
    tables as the executor keeps them (table i in row ids[i]), with the device copy synced."""
    from harness.gpu.device_tables import DeviceTables
    from harness.gpu.host_state import TableRows

    def make(tables: list, device="cpu"):
        rows = TableRows(rows=len(tables))
        ids = np.array(rows.update(list(range(len(tables))),
                                   [tuple(int(b) for b in table) for table in tables]))
        device = DeviceTables(rows, torch.device(device))
        device.stage()
        device.sync()
        return ids, rows, device

    return make
