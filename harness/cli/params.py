"""Allocator parameters from the command line: --block-size and --param [ALLOCATOR.]KEY=VALUE.

One reading for every subcommand that takes them (simulate, gpu, plan). --block-size sets each
chosen allocator's grain (its spec says which parameter that is); an unprefixed --param goes to
every chosen allocator that has the key and is an error when none has it; a prefixed one goes to
that allocator, which must be one of the chosen. Values stay text here: the spec converts and
checks them, so every bad key, type or range is one allocators.ParamError.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from allocators import SPECS, ParamError, spec_of
from harness.cli.argtypes import positive_int


def add_param_arguments(parser: argparse.ArgumentParser, *, prefixed: bool = True) -> None:
    parser.add_argument("--block-size", type=positive_int,
                        help="allocation grain of each allocator: "
                        + ", ".join(f"{s.grain} ({s.name})" for s in SPECS.values()))
    metavar = "[ALLOCATOR.]KEY=VALUE" if prefixed else "KEY=VALUE"
    parser.add_argument("--param", action="append", default=[], metavar=metavar,
                        help="an allocator parameter, repeatable; with a prefix "
                        "(ALLOCATOR.KEY=VALUE) for that allocator only. Parameters: "
                        + " | ".join(f"{s.name}: {', '.join(s.names)}" for s in SPECS.values()))


def cli_params(
    names: Sequence[str], block_size: int | None, items: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per chosen allocator, the parameters --block-size and --param give it (unconverted)."""
    specs = [spec_of(name) for name in names]
    params: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
    if block_size is not None:
        for spec in specs:
            params[spec.name][spec.grain] = block_size
    for item in items:
        for name, key, text in _targets(item, names):
            params[name][key] = text
    for spec in specs:
        spec.validate(params[spec.name])
    return params


def _targets(item: str, names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(allocator, key, value) for each chosen allocator one --param applies to."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ParamError(f"--param {item!r}: expected [ALLOCATOR.]KEY=VALUE")
    owner, dot, key = key.rpartition(".")
    chosen = ", ".join(names)
    if dot:
        if owner not in SPECS:
            raise ParamError(f"--param {item}: unknown allocator {owner!r}; allocators: "
                             f"{', '.join(SPECS)}")
        if owner not in names:
            raise ParamError(f"--param {item}: allocator {owner} is not in this run "
                             f"(allocators: {chosen})")
        return [(owner, key, text)]
    takers = [name for name in names if key in spec_of(name).names]
    if not takers:
        known = "; ".join(f"{name}: {', '.join(spec_of(name).names)}" for name in names)
        raise ParamError(f"--param {item}: no allocator of this run ({chosen}) has a parameter "
                         f"{key!r}; theirs: {known}")
    return [(name, key, text) for name in takers]
