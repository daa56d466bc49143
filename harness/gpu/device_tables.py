"""The executor's block tables on the device, kept equal to the host's TableRows by the entries
that changed.

A step needs the block tables of its sequences on the device. Sending them whole every step
costs batch x width entries on the host and over PCIe (a page-1 allocator's tables hold one
entry per token: megabytes a step); a decode step changes about one entry per sequence. So the
rows of TableRows live on the device too: each step sends the entries written since the last
one (indices and values, one copy) and scatters them, and a step's tables are a gather of its
rows on the device.

Two halves, as a step's work splits: stage() does the host part (before the timed region),
sync() and apply() the device part, in stream order before the step's kernels. The staging
buffer is reused: the previous step's copy out of it must be complete before the next stage(),
as it is once the executor has waited for the step's end. It is made up front for the entries
a step usually changes, since pinning host memory inside a step would cost that step
milliseconds; a step changing more (new sequences' whole tables: a page-1 allocator's prompt of
thousands of tokens, swap-ins) sends them from pageable memory instead, a copy the host waits
for, rather than pinning a larger buffer.

apply() sends the staging buffer whole and scatters every entry of it, those past the step's
changes pointing at a scratch entry after the array's last: fixed shapes, so a CUDA graph can
hold it (harness/gpu/graphs.py), and a step that replays a graph makes no call of its own for
its table changes. A graph also holds the address of the device array, which moves when the
host array grows: `generation` counts the moves, and a graph of an older one is captured again.
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
        self.generation = 0  # allocations of the device array so far
        self._flat = torch.zeros(1, dtype=torch.int32, device=device)  # the array, then scratch
        self.rows = self._flat[:0].view(0, 0)
        # [2, changes] int64: flat indices and values of changed entries, pinned for a GPU.
        self._pinned = torch.zeros(2, changes, dtype=torch.int64,
                                   pin_memory=device.type == "cuda")
        self._changes = torch.zeros(2, changes, dtype=torch.int64, device=device)
        self._used = 0  # staging entries holding changes; the rest point at the scratch entry
        self._pageable: torch.Tensor | None = None  # [2, n]: or staged here, when more
        self._whole = False
        # The array as it is now goes over at once, outside any step: the first step then
        # sends its changes alone (a page-1 allocator's array is megabytes, a pageable copy
        # that timed a run's first step about a millisecond longer than a page-16 one's).
        self.stage()
        self.sync()

    def stage(self) -> None:
        """Host part: the entries written since the last stage(), staged for sync() and apply()
        (after the host array grew: a new device array, to be sent whole)."""
        changes = self.host.take_changes()
        staged = self._pinned.numpy()
        if changes is None:
            array = self.host.array
            self._flat = torch.empty(array.size + 1, dtype=torch.int32, device=self.device)
            self.rows = self._flat[:-1].view(array.shape)
            self.generation += 1
            self._whole = True
            self._used = staged.shape[1]  # every entry pointed at the old array's scratch
            changes = (np.zeros(0, np.int64),) * 2
        n = len(changes[0])
        if n > staged.shape[1]:
            self._pageable = torch.from_numpy(np.stack(changes))  # int64
            n = 0
        else:
            staged[0, :n], staged[1, :n] = changes
        staged[0, n : self._used] = self._flat.numel() - 1
        staged[1, n : self._used] = 0
        self._used = n

    def sync(self, graph_applies: bool = False) -> None:
        """Device part: the whole array after it was reallocated, changes staged beyond the
        pinned buffer, and apply() unless the step replays a graph, which holds it."""
        if self._whole:
            self.rows.copy_(torch.from_numpy(self.host.array))
            self._whole = False
        if self._pageable is not None:
            changes = self._pageable.to(self.device, non_blocking=True)
            self._flat.index_copy_(0, changes[0], changes[1].to(torch.int32))
            self._pageable = None
        if not graph_applies:
            self.apply()

    def apply(self) -> None:
        """The staging buffer sent whole and scattered (fixed shapes: a graph can hold it)."""
        if self._changes.shape[1]:
            self._changes.copy_(self._pinned, non_blocking=True)
            self._flat.index_copy_(0, self._changes[0], self._changes[1].to(torch.int32))

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
