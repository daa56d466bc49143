"""Compile probe: what the split decode kernel's loop (kernels/paged_decode.py, one key tile a
trip) issues per tile on Hopper, for a bf16 and an fp8 cache, counted by opcode in its SASS.

Needs Triton and no GPU: the kernel is compiled for sm_90 with paged_decode's default launch
(kernels/decode_launch.py default_config) for llama3-8b heads (32 query, 8 KV, head_dim 128), at
block sizes 16 and 64, disassembled with the cuobjdump Triton ships, and its loop taken as the
longest backward branch; cuobjdump also gives its registers and stack (spilled registers) under
the launch's register cap. Writes decode_loop_sass_sm90.csv:

    PYTHONPATH=. python benchmarks/probe_decode_sass.py --out OUT
"""
from __future__ import annotations

import argparse
import collections
import csv
import datetime
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.decode_launch import default_config
from kernels.fp8 import FP8_DTYPE
from kernels.paged_decode import DecodeShape, _decode_split_kernel, shape_constants

OPCODES = ("F2FP", "HMMA", "IMAD.MOV", "LDS", "LDSM", "LDGSTS", "LDG", "MUFU", "STL", "LDL")
SPLITS = 2  # a split launch; the loop is the same as an unsplit one's


def compiled(kv_dtype: torch.dtype, block_size: int):
    """The split decode kernel compiled for sm_90 with its default launch, and that launch."""
    shape = DecodeShape(8, 32, 128, (32 * 128, 128), torch.bfloat16, torch.device("cuda"), 8,
                        block_size, 4096, kv_dtype, 4096 // block_size, 4096 // block_size)
    fp8 = kv_dtype == FP8_DTYPE
    config = default_config(block_size, SPLITS, 4096, fp8)
    constexprs = dict(shape_constants(shape), SPLIT=True, BLOCK_N=config.block_n,
                      COMBINE_ROWS=4)
    names = _decode_split_kernel.arg_names
    cache = "*fp8e4nv" if fp8 else "*bf16"
    pointers = dict(Q="*bf16", K_base=cache, V_base=cache, K_offsets="*i64", V_offsets="*i64",
                    K_scale="*fp32", V_scale="*fp32", Block_tables="*i32", Context_lens="*i32",
                    Out="*bf16", Part_out="*fp32", Part_lse="*fp32", Counters="*i32")
    signature = {n: "constexpr" if n in constexprs else
                 pointers.get(n, "fp32" if n == "qk_scale" else "i32") for n in names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in pointers}
    source = ASTSource(_decode_split_kernel, signature, attrs=aligned,
                       constexprs={(names.index(k),): v for k, v in constexprs.items()})
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=config.options())
    return kernel, config


def loop_opcodes(sass: str) -> collections.Counter:
    """Opcodes of the instructions from the target of the longest backward branch to it."""
    code = []  # (address, opcode, branch target or None)
    for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);",
                         sass):
        target = re.search(r"0x([0-9a-f]+)", m.group(3)) if m.group(2) == "BRA" else None
        code.append((int(m.group(1), 16), m.group(2), target and int(target.group(1), 16)))
    _, start, end = max((addr - target, target, addr) for addr, _, target in code
                        if target is not None and target < addr)
    return collections.Counter(op for addr, op, _ in code if start <= addr <= end)


def cuobjdump(kernel, option: str) -> str:
    """What the cuobjdump Triton ships prints with `option` for the kernel's cubin."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as fh:
            fh.write(kernel.asm["cubin"])
        return subprocess.run([triton.knobs.nvidia.cuobjdump.path, option, cubin],
                              capture_output=True, text=True, check=True).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/tuning")
    args = parser.parse_args()
    rows = []
    for kv_dtype in (torch.bfloat16, FP8_DTYPE):
        for block_size in (16, 64):
            kernel, config = compiled(kv_dtype, block_size)
            ops = loop_opcodes(cuobjdump(kernel, "-sass"))
            usage = cuobjdump(kernel, "-res-usage")
            counts = {op: sum(n for name, n in ops.items()
                              if name == op or name.startswith(op + ".")) for op in OPCODES}
            rows.append(dict(kv_dtype="fp8" if kv_dtype == FP8_DTYPE else "bf16",
                             block_size=block_size, block_n=config.block_n,
                             tile_kv_bytes=2 * config.block_n * 128 * kv_dtype.itemsize,
                             registers=int(re.search(r"REG:(\d+)", usage)[1]),
                             stack_bytes=int(re.search(r"STACK:(\d+)", usage)[1]),
                             loop_instructions=sum(ops.values()),
                             **{op.lower().replace(".", "_"): n for op, n in counts.items()}))
            print(rows[-1], flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "decode_loop_sass_sm90.csv"), "w", newline="") as fh:
        fh.write(f"# device: none (compiled for sm_90, not run)\n# triton: {triton.__version__}\n"
                 f"# date: {datetime.date.today().isoformat()}\n"
                 f"# command: PYTHONPATH=. python {' '.join(sys.argv)}\n"
                 "# note: per warp and key tile of the split decode loop; opcode columns count "
                 "the instructions whose opcode is that or starts with it and a dot (ldsm is "
                 "not in lds)\n")
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
