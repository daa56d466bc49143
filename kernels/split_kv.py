"""Split-KV (flash-decoding) pieces shared by paged_decode and paged_prefill: a launch whose
programs each attend to a share of a row's keys writes a normalised partial output and its
base-2 log-sum-exp per split, and one reduce kernel combines them, weighted by those
log-sum-exps (a split that saw no key has -inf and weighs nothing)."""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kernels.launch import DirectLaunch
from kernels.tl_helpers import round_to_bf16

MAX_SPLITS = 64
# Splits a varlen reduce combines at a time (one warp's worth, as the reduce is fastest with).
VARLEN_CHUNK = 32
# griddepcontrol (programmatic dependent launch) exists from Hopper on and in Triton >= 3.4.
HAS_PDL = hasattr(getattr(tl.extra, "cuda", None), "gdc_wait")


@functools.lru_cache(maxsize=None)
def use_pdl(device: torch.device) -> bool:
    """Whether a reduce kernel can be a programmatic dependent launch on this device."""
    return HAS_PDL and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


@triton.jit(do_not_specialize=["rows_at"])
def _reduce_kernel(Part_out, Part_lse, Out, stride_ob, stride_oh, num_splits, Rows, rows_at,
                   NUM_HEADS: tl.constexpr, BLOCK_S: tl.constexpr, HEAD_DIM: tl.constexpr,
                   EMULATE_BF16: tl.constexpr, USE_PDL: tl.constexpr,
                   LIMIT_ROWS: tl.constexpr, VARLEN: tl.constexpr):
    b = tl.program_id(0)
    head = tl.program_id(1)
    if VARLEN:
        # Row b's splits are Rows[rows_at + b] .. Rows[rows_at + b + 1] - 1 of num_splits per
        # head; a row of one split holds its output already (that split wrote it).
        first = tl.load(Rows + rows_at + b)
        count = tl.load(Rows + rows_at + b + 1) - first
        if count == 1:
            return
    elif LIMIT_ROWS:
        # Rows from Rows[rows_at] on have no partials: they keep what they hold.
        if b >= tl.load(Rows + rows_at):
            return
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, HEAD_DIM)
    if VARLEN:
        row = head * num_splits + first
    else:
        row = (b * NUM_HEADS + head) * num_splits
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
    if VARLEN:
        # Any number of splits, BLOCK_S at a time, each chunk's weights rescaled to the
        # largest log-sum-exp so far.
        top = tl.full([], float("-inf"), tl.float32)
        total = tl.zeros([], tl.float32)
        acc = tl.zeros([HEAD_DIM], tl.float32)
        for chunk in range(0, count, BLOCK_S):
            split = chunk + s
            lse = tl.load(Part_lse + row + split, mask=split < count, other=float("-inf"))
            new_top = tl.maximum(top, tl.max(lse, 0))
            shift = tl.where(new_top == float("-inf"), 0.0, new_top)
            alpha = tl.exp2(top - shift)
            weight = tl.exp2(lse - shift)
            parts = tl.load(Part_out + (row + split)[:, None] * HEAD_DIM + d[None, :],
                            mask=(split < count)[:, None], other=0.0)
            acc = acc * alpha + tl.sum(parts * weight[:, None], 0)
            total = total * alpha + tl.sum(weight, 0)
            top = new_top
    else:
        lse = tl.load(Part_lse + row + s, mask=s < num_splits, other=float("-inf"))
        top = tl.max(lse, 0)
        weight = tl.exp2(lse - tl.where(top == float("-inf"), 0.0, top))
        parts = tl.load(Part_out + (row + s)[:, None] * HEAD_DIM + d[None, :],
                        mask=(s < num_splits)[:, None], other=0.0)
        total = tl.sum(weight, 0)
        acc = tl.sum(parts * weight[:, None], 0)
    out = acc / tl.where(total > 0, total, 1.0)
    if EMULATE_BF16:
        out = round_to_bf16(out)
    tl.store(Out + b * stride_ob + head * stride_oh + d, out.to(Out.dtype.element_ty))


def partials(out: torch.Tensor, rows: int, num_splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a split launch writes its partial results for the reduce: float32 outputs and
    log-sum-exps, a row per query row, head and split, in one allocation (on the graph's pool
    under capture). With one split the kernel writes `out` itself: both are `out`."""
    if num_splits == 1:
        return out, out
    _, num_heads, head_dim = out.shape
    parts = rows * num_heads * num_splits
    part_out = torch.empty(parts * (head_dim + 1), dtype=torch.float32, device=out.device)
    return part_out, part_out[parts * head_dim:]


def reduce_launch(num_heads: int, head_dim: int, num_splits: int, emulate_bf16: bool,
                  pdl: bool, *, limit_rows: bool, varlen: bool = False) -> DirectLaunch:
    """The kernel that combines num_splits partial outputs per row and head, weighted by their
    log-sum-exps (shared with kernels/paged_prefill.py, whose rows are query tokens). Its
    arguments: Part_out, Part_lse, Out, Out's row and head strides, num_splits, then an int32
    tensor and an index into it: with limit_rows, the rows from that element's value on are
    left as they are; without, every row of the grid is written and the tensor is not read.
    varlen (kernels/balanced_decode.py): rows have any number of splits, row b those from the
    tensor's element b on to element b + 1, of num_splits per head (partials() of one row);
    a row of exactly one is left as it is. pdl: a programmatic dependent launch, after a split
    kernel that allows it (use_pdl)."""
    block_s = VARLEN_CHUNK if varlen else triton.next_power_of_2(num_splits)
    # One warp sums the splits inside each thread, with no exchange between warps: faster than
    # four warps up to 32 splits at 1x4096, slower at 64 (measured on an H100).
    options = dict(num_warps=1 if block_s <= 32 else 4)
    if pdl:
        options["launch_pdl"] = True
    return DirectLaunch(_reduce_kernel,
                        dict(NUM_HEADS=num_heads, BLOCK_S=block_s, HEAD_DIM=head_dim,
                             EMULATE_BF16=emulate_bf16, USE_PDL=pdl, LIMIT_ROWS=limit_rows,
                             VARLEN=varlen),
                        options)
