"""How many programs of a compiled Triton kernel the GPU holds at once, for launch heuristics
that size their grids in waves (kernels/paged_decode.py, kernels/paged_prefill.py)."""
from __future__ import annotations

import functools

import torch
import triton


@functools.lru_cache(maxsize=None)
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (the Triton interpreter runs one
    program at a time)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.lru_cache(maxsize=None)
def programs_per_sm(kernel, device: torch.device, signature: tuple, constexprs: tuple,
                    options: tuple) -> int:
    """Programs of one compiled variant of `kernel` (a Triton JIT function, compiled for the
    argument types and values in signature) that an SM holds at once: the tightest of its
    threads, registers (allocated per warp in units of 256) and shared memory (the largest a
    program may take, about what an SM has; 1 KiB more per program is reserved), as in
    Triton's fused-softmax tutorial."""
    options = dict(options)
    num_warps = options["num_warps"]
    compiled = kernel.warmup(*signature, grid=(1,), **options, **dict(constexprs))
    compiled._init_handles()
    limits = triton.runtime.driver.active.utils.get_device_properties(device.index)
    threads = torch.cuda.get_device_properties(device).max_threads_per_multi_processor
    warp_regs = -(-compiled.n_regs * 32 // 256) * 256
    return max(1, min(threads // (32 * num_warps),
                      limits["max_num_regs"] // max(warp_regs, 1) // num_warps,
                      limits["max_shared_mem"] // (compiled.metadata.shared + 1024),
                      32))
