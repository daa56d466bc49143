"""The executor's block tables on the device, kept equal to the host's TableRows by the entries
that changed.

A step needs the block tables of its sequences on the device. Sending them whole every step
costs batch x width entries on the host and over PCIe (a page-1 allocator's tables hold one
entry per token: megabytes a step); a decode step changes about one entry per sequence. So the
rows of TableRows live on the device too: each step sends the entries written since the last
one (indices and values, one copy) and scatters them, and a step's tables are a gather of its
rows on the device.

Two halves, as a step's work splits: stage() does the host part (before the timed region),
sync() the device part, in stream order before the step's kernels. The staging buffer is
reused: the previous step's copy out of it must be complete before the next stage(), as it is
once the executor has waited for the step's end. It is made up front for the entries a step
usually changes, since pinning host memory inside a step would cost that step milliseconds; a
step changing more (new sequences' whole tables: a page-1 allocator's prompt of thousands of
tokens, swap-ins) sends them from pageable memory instead, a copy the host waits for, rather
than pinning a larger buffer.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.gpu.host_state import TableRows


class DeviceTables:
    """TableRows' array on the device."""

    def __init__(self, host: TableRows, device: torch.device, changes: int = 0) -> None:
        """changes: entries a step may change and send from the pinned staging buffer."""
        self.host = host
        self.device = device
        self.rows = torch.zeros(0, 0, dtype=torch.int32, device=device)
        self._pinned = self._staging(changes)
        self._count = 0  # entries staged in the pinned buffer
        self._pageable: torch.Tensor | None = None  # [2, n]: or staged here, when more
        self._whole = True

    def stage(self) -> None:
        """Host part: the entries written since the last stage(), staged for sync()."""
        changes = self.host.take_changes()
        if changes is None:
            self._whole = True
            return
        n = len(changes[0])
        if n > self._pinned.shape[1]:
            self._pageable = torch.from_numpy(np.stack(changes))  # int64
            return
        staged = self._pinned.numpy()
        staged[0, :n], staged[1, :n] = changes
        self._count = n

    def sync(self) -> None:
        """Device part: apply what stage() took (the whole array after it was reallocated)."""
        if self._whole:
            self.rows = torch.tensor(self.host.array, device=self.device)
            self._whole = False
        elif self._count or self._pageable is not None:
            staged = self._pinned[:, : self._count] if self._pageable is None else self._pageable
            changes = staged.to(self.device, non_blocking=True)
            self.rows.view(-1).index_copy_(0, changes[0], changes[1].to(torch.int32))
        self._count, self._pageable = 0, None

    def _staging(self, entries: int) -> torch.Tensor:
        """[2, entries] int64: flat indices and values of changed entries, pinned for a GPU."""
        return torch.zeros(2, entries, dtype=torch.int64, pin_memory=self.device.type == "cuda")

    def gather(self, rows: torch.Tensor, width: int, out: torch.Tensor | None = None):
        """[len(rows), width] int32: the first width entries of the given rows (device int64
        row ids), into out when given."""
        return torch.index_select(self.rows[:, :width], 0, rows, out=out)



def fixed_tables(tables: np.ndarray, device: torch.device) -> DeviceTables:
    """Block tables that stay as given, on the device and synced: row i holds tables[i] (a
    forward outside the executor: the fp8 calibration, the accuracy comparison). Its host
    array is what layout_step reads, with np.arange(len(tables)) as the table rows."""
    rows = TableRows(rows=len(tables), width=tables.shape[1])
    ids = rows.update(list(range(len(tables))), [tuple(table.tolist()) for table in tables])
    if ids.tolist() != list(range(len(tables))):
        raise AssertionError("TableRows hands out its rows in order")
    device_tables = DeviceTables(rows, device)
    device_tables.stage()
    device_tables.sync()
    return device_tables
