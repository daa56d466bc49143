"""Launching a Triton kernel through its compiled form, skipping the JIT's per-call work.

A JIT launch binds every argument by name, specialises each one, builds a cache key (formatting
the launch options into a string) and checks the kernel's globals on every call: for a kernel of
thirty arguments that is tens of microseconds of host time, longer than a small decode kernel
runs on the device. The compiled kernel the JIT returns can be launched again directly for any
later call whose arguments specialise the same way: what Triton specialises on is each
tensor's dtype and 16-byte alignment, and each integer's width class, divisibility by 16 and
equality to 1 (floats are never specialised). DirectLaunch keys its compiled kernels by exactly
that, read off the arguments in one pass, so a launch it does not know goes through the JIT
(which compiles or finds the right variant) and is known from then on.

A known launch passes each tensor as its address, read in that same pass: Triton's launcher
takes an integer as the pointer itself, where for a tensor it would call data_ptr() again and
ask the driver about the address (cuPointerGetAttribute), a driver call per tensor argument.
That check is what turns a host tensor away, so whether a tensor is on the GPU is part of the
key: a first launch with a host tensor goes through the JIT, which refuses it.

A known launch also calls the compiled launcher itself, as the compiled kernel's own launch
would after building the metadata that launch hooks are handed (a dict of the kernel's name,
handle and stream, built on every launch since Triton's hooks are an empty chain rather than
None): with no hook registered (a profiler such as Proton registers one), it passes none and
no metadata.

Under the Triton interpreter (CPU tensors) the JIT returns no compiled kernel: every launch
goes through it, as before.
"""
from __future__ import annotations

import torch
import triton
from triton.compiler import CompiledKernel

_2_31, _2_63 = 2**31, 2**63


def specialization(args: tuple) -> tuple[tuple, tuple]:
    """What the JIT would specialise a launch on, per positional argument (with whether each
    tensor is on the GPU), and the arguments as the compiled launcher takes them: each tensor
    as its address. Plain ints and tensors, nearly every argument, are told apart by their
    exact type before any isinstance test: a failing isinstance test is the slowest test of the
    loop."""
    key, bound = [], []
    for a in args:
        kind = type(a)
        if kind is int:
            key.append(_int_key(a))
        elif kind is torch.Tensor or isinstance(a, torch.Tensor):
            ptr = a.data_ptr()
            key.append((a.dtype, ptr % 16 == 0, a.is_cuda))
            a = ptr
        elif kind is bool or a is None:
            key.append(a)
        elif isinstance(a, int):
            key.append(_int_key(a))
        else:
            key.append(kind)
        bound.append(a)
    return tuple(key), tuple(bound)


def _int_key(a: int) -> tuple:
    """What the JIT specialises an integer on: equal to 1, divisible by 16, its width."""
    return (a == 1, a % 16 == 0, -_2_31 <= a < _2_31, -_2_63 <= a < _2_63)


class DirectLaunch:
    """One Triton kernel with fixed compile-time constants and launch options, launched with
    positional runtime arguments (every argument before the constexprs, in order)."""

    def __init__(self, kernel, constexprs: dict, options: dict) -> None:
        self.kernel = kernel
        self.constexprs = constexprs
        self.options = options
        self._jit_kwargs = {**constexprs, **options}
        self._compiled: dict[tuple, tuple[CompiledKernel, tuple]] = {}

    def __call__(self, grid: tuple[int, int, int], *args) -> None:
        key, bound = specialization(args)
        found = self._compiled.get(key)
        if found is not None:
            compiled, constants = found
            launch_compiled(compiled, grid, (*bound, *constants))
            return
        compiled = self.kernel[grid](*args, **self._jit_kwargs)
        if isinstance(compiled, CompiledKernel):
            # The compiled launcher takes every parameter in order, constexprs included.
            names = self.kernel.arg_names[len(args):]
            self._compiled[key] = (compiled, tuple(self.constexprs[n] for n in names))


def launch_compiled(compiled: CompiledKernel, grid: tuple[int, int, int], args: tuple) -> None:
    """Launch a compiled kernel with every parameter in order, tensors as addresses: through
    its launcher with no metadata where no launch hook is registered, else through the
    kernel's own launch, which hands the hooks their metadata."""
    if no_launch_hooks():
        compiled.run(grid[0], grid[1], grid[2], current_stream(), compiled.function,
                     compiled.packed_metadata, None, None, None, *args)
    else:
        compiled[grid](*args)


# Triton's runtime settings, where its launch hooks are registered (None for a Triton without
# `triton.knobs`, whose hooks this module does not read).
_RUNTIME_KNOBS = getattr(getattr(triton, "knobs", None), "runtime", None)


def no_launch_hooks() -> bool:
    """Whether no launch hook is registered with Triton (always false without triton.knobs)."""
    runtime = _RUNTIME_KNOBS
    if runtime is None:
        return False
    return not (runtime.launch_enter_hook.calls or runtime.launch_exit_hook.calls)


def current_stream() -> int:
    """The current device's current CUDA stream, as Triton's own launch reads it."""
    driver = triton.runtime.driver.active
    return driver.get_current_stream(driver.get_current_device())
