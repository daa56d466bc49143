"""Local sweep workers end when the sweep process is killed with SIGKILL (no cleanup runs)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.sweep.lifeline import PARENT_POLL_S

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

# Whole-trace cells: the workers are still busy when the test kills the sweep.
SLOW_GRID = """
[trace]
source = "azure-conv"

[base]
model = "llama3-8b"
gpu = "h100-80gb"

[grid]
allocator = ["segmented", "hybrid", "paged", "static"]
"""

# A process that forks a worker tied to it with the fallback watchdog only (prctl disabled).
WATCHDOG_ONLY = """
import os, sys, time
from harness.sweep import lifeline
lifeline._set_parent_death_signal = lambda sig: False
parent = os.getpid()
if os.fork() == 0:
    lifeline.die_with_parent(parent)
    time.sleep(600)
    os._exit(0)
print("ready", flush=True)
time.sleep(600)
"""


def _state_and_ppid(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid from /proc, None once it no longer exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _state_and_ppid(int(entry.name))
            if info is not None and info[1] == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    info = _state_and_ppid(pid)
    return info is not None and info[0] != "Z"  # a zombie has exited; only reaping is left


def _wait_until(predicate, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _kill_and_check_orphans(parent: subprocess.Popen, orphans: list[int], within_s: float):
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_until(lambda: not any(map(_alive, orphans)), within_s), (
            f"still running after the parent's SIGKILL: {[p for p in orphans if _alive(p)]}"
        )
    finally:
        for pid in filter(_alive, orphans):  # leave nothing behind if the assertion failed
            os.kill(pid, signal.SIGKILL)


def test_sigkill_of_a_local_sweep_ends_its_workers(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(SLOW_GRID)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "sweep", str(grid), "--out", str(tmp_path / "out"),
         "--workers", "2", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    started = _wait_until(lambda: len(_children(sweep.pid)) >= 2, within_s=60)
    workers = _children(sweep.pid)
    _kill_and_check_orphans(sweep, workers, within_s=5)
    assert started, "the sweep started no workers"


def test_without_prctl_the_watchdog_ends_the_orphan():
    parent = subprocess.Popen([sys.executable, "-c", WATCHDOG_ONLY], stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout.readline().strip() == "ready"
    (worker,) = _children(parent.pid)
    _kill_and_check_orphans(parent, [worker], within_s=PARENT_POLL_S + 5)
