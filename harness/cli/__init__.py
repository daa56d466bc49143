"""The `kvharness` command line: one subcommand per module of harness/cli/."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module under harness.cli, one-line help)
COMMANDS = {
    "run": ("run", "the main job: bundled traces through every allocator, then the report PDF"),
    "simulate": ("simulate", "replay a trace through one allocator in the SimPy engine"),
    "plan": ("plan", "capacity planner: KV budget, largest context and concurrency"),
    "trace": ("trace", "inspect a trace: `kvharness trace info PATH|NAME`"),
    "report": ("report", "build a PDF report from run or sweep directories"),
    "sweep": ("sweep", "run a grid of configurations, locally or on a Dask cluster"),
    "gpu": ("gpu", "replay a trace on the GPU with measured step times"),
    "profile": ("profile", "measure the GPU executor's step times for the fitted cost model"),
    "export-trace": ("export_trace", "a run's steps and requests as a Perfetto timeline"),
    "window": ("window", "what a sliding attention window frees per allocator (mistral-7b)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvharness", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"harness.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"harness.cli.{module}":
                raise
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(cmd)
        cmd.set_defaults(handler=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; return the exit status (2 for bad input, said in one line)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `kvharness plan --json | head`: the reader has all it wanted. Point stdout at devnull
        # so the interpreter's own flush at exit does not raise again, and stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _dispatch(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:  # the main job writes runs/ and reports/: it starts only when asked by name
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): a status for callers of main()
        return 0 if exc.code is None else int(exc.code)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # an OSError, but not bad input: main() ends quietly
        raise
    except user_errors() as exc:
        print(f"kvharness {args.command}: error: {exc}", file=sys.stderr)
        return 2


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that describe bad input (a file, a config, a preset, a grid), not a bug.

    Imported only when an exception reaches main(), so a command pays for none of them.
    """
    from allocators import ParamError
    from harness.model.budget import BudgetError
    from harness.model.config import ConfigError
    from harness.model.presets import PresetError
    from harness.sweep.grid import GridError
    from harness.sweep.runner import SweepError
    from reports.load import RunDirError
    from reports.schema import MeasurementError
    from workloads import TraceError
    from workloads.spec import TraceSpecError

    return (BudgetError, ConfigError, ParamError, PresetError, GridError, SweepError, TraceError,
            TraceSpecError, RunDirError, MeasurementError, OSError)
