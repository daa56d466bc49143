"""Local sweep workers that end when the sweep process that started them ends.

A sweep killed with SIGKILL runs no cleanup: its worker processes, reparented to init, would go
on simulating cells whose results nobody collects (only the sweep process writes files). On Linux
the kernel ends them: prctl(PR_SET_PDEATHSIG) sends the worker SIGKILL when its parent dies.
Elsewhere a daemon thread in the worker watches for the parent to change and exits.

Both watch the worker's direct parent, so the pool must start its workers itself rather than
through a fork server (child_context).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.context import BaseContext

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_S = 1.0  # how often the fallback watchdog looks; bounds how long an orphan lingers


def child_context() -> BaseContext:
    """The default multiprocessing context, unless it is forkserver, whose workers are children
    of the server and not of this process; then spawn. Leaves the global start method unset."""
    method = multiprocessing.get_start_method(allow_none=True)
    method = method or multiprocessing.get_all_start_methods()[0]  # the first is the default
    return multiprocessing.get_context("spawn" if method == "forkserver" else method)


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when parent_pid, its parent, goes away."""
    if not _set_parent_death_signal(signal.SIGKILL):
        _start_watchdog(parent_pid)
    # The parent may have died between the fork and here, before the signal was armed.
    if os.getppid() != parent_pid:
        os._exit(1)


def _set_parent_death_signal(sig: signal.Signals) -> bool:
    """Ask the kernel to send sig when the parent dies; False where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _start_watchdog(parent_pid: int) -> None:
    """A daemon thread that exits the process once its parent is no longer parent_pid (an
    orphan is reparented, so its parent pid changes)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
