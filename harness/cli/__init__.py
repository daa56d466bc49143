"""The `kvharness` command line: one subcommand per module of harness/cli/."""
from __future__ import annotations

import argparse
import importlib
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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or ["run"])
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
