"""Split-KV (flash-decoding) pieces shared by the attention kernels: a launch whose programs
each attend to a share of a row's keys writes a normalised partial output and its base-2
log-sum-exp per split, and the splits are combined, weighted by those log-sum-exps (a split
that saw no key has -inf and weighs nothing), in one of two ways:

- kernels/paged_prefill.py and kernels/balanced_decode.py launch _reduce_kernel after their
  split kernel (reduce_launch, a programmatic dependent launch where the GPU has one);
- kernels/paged_decode.py combines in its split kernel: the last program of a row and KV head
  to finish (last_split, counting in split_counters' buffer) combines that row's splits
  (combine_splits), which saves the second launch's host time in every eager call and a
  kernel launch per layer in a CUDA graph.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kernels.launch import DirectLaunch
from kernels.tl_helpers import round_to_bf16

MAX_SPLITS = 64
# The same, as the number of log-sum-exps combine_splits loads at once (a jit function reads
# only constexpr globals): every split's in one load up to MAX_SPLITS.
_SPLITS_AT_ONCE = tl.constexpr(MAX_SPLITS)
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


@triton.jit
def last_split(Counters, index, num_splits):
    """Whether this program is the last of the num_splits programs counting in Counters[index]
    to have written its partials; that one sets the counter back to zero for the next launch
    and may then read every split's partials (combine_splits).

    A scalar atomic runs once per program, not once per thread: Triton's NVIDIA lowering
    (triton-lang/triton, third_party/nvidia/lib/TritonNVIDIAGPUToLLVM/LoadStoreOpToLLVM.cpp,
    AtomicRMWOpConversion) predicates a non-tensor atomic on one thread
    (emitRedundantThreadPredicate) and hands its result to the others through shared memory
    (finalizeAtomicResults). A kernel of this shape compiled for sm_90 by the installed Triton
    reads `@%p1 atom.global.gpu.acq_rel.add.u32` with %p1 = (tid.x == 0), then st.shared,
    bar.sync, ld.shared. The barrier before it orders every thread's partial stores before
    that one thread's releasing add (Triton's lowering inserts one too for an acq_rel atomic;
    this one does not rely on it); the last program's acquiring add orders the other programs'
    stores before its own loads."""
    tl.debug_barrier()
    ticket = tl.atomic_add(Counters + index, 1, sem="acq_rel", scope="gpu")
    last = ticket == num_splits - 1
    if last:
        tl.store(Counters + index, 0)
    return last


@triton.jit
def combine_splits(Part_out, Part_lse, rows, row_mask, num_splits, ROWS: tl.constexpr,
                   AT_ONCE: tl.constexpr, HEAD_DIM: tl.constexpr):
    """The outputs of the ROWS query rows `rows` (where row_mask) from their num_splits partials
    each, as _reduce_kernel combines them: each split weighted by exp2 of its log-sum-exp less
    the row's largest (a split of -inf weighs nothing), zeros where no split saw a key.

    The log-sum-exps come MAX_SPLITS a load, and the partials AT_ONCE splits a load, each
    summed in its own lane until after the loop: about num_splits / AT_ONCE round trips to L2
    in a row rather than two per split, in a fixed order, so the result does not depend on
    which program combines. A [ROWS, AT_ONCE, HEAD_DIM] tile holds as many registers as the
    attention's [BLOCK_G, HEAD_DIM] where ROWS * AT_ONCE = BLOCK_G. No reduction sits inside a
    loop: Triton 3.6's OptimizeThreadLocality pass fails on such a loop's result used twice.
    The loads go to L2 (.cg): other programs, on other SMs, wrote the partials, and this SM's
    L1 must not answer with an older line."""
    d = tl.arange(0, HEAD_DIM)
    first = rows * num_splits
    every = tl.arange(0, _SPLITS_AT_ONCE)
    top = tl.full([ROWS, _SPLITS_AT_ONCE], float("-inf"), tl.float32)
    for start in range(0, num_splits, _SPLITS_AT_ONCE):
        mask = row_mask[:, None] & (start + every < num_splits)[None, :]
        top = tl.maximum(top, tl.load(Part_lse + first[:, None] + start + every[None, :],
                                      mask=mask, other=float("-inf"), cache_modifier=".cg"))
    top = tl.max(top, 1)
    shift = tl.where(top == float("-inf"), 0.0, top)
    lane = tl.arange(0, AT_ONCE)
    acc = tl.zeros([ROWS, AT_ONCE, HEAD_DIM], tl.float32)
    total = tl.zeros([ROWS, AT_ONCE], tl.float32)
    for start in range(0, num_splits, AT_ONCE):
        part = first[:, None] + start + lane[None, :]
        mask = row_mask[:, None] & (start + lane < num_splits)[None, :]
        weight = tl.exp2(tl.load(Part_lse + part, mask=mask, other=float("-inf"),
                                 cache_modifier=".cg") - shift[:, None])
        parts = tl.load(Part_out + part[:, :, None] * HEAD_DIM + d[None, None, :],
                        mask=mask[:, :, None], other=0.0, cache_modifier=".cg")
        acc += parts * weight[:, :, None]
        total += weight
    total = tl.sum(total, 1)
    return tl.sum(acc, 1) / tl.where(total > 0, total, 1.0)[:, None]


# Every counters buffer handed out, per device: a CUDA graph captured earlier holds the address
# of an older one, which must stay allocated (and zero) after a larger one replaces it.
_COUNTERS: dict[torch.device, list[torch.Tensor]] = {}


def split_counters(device: torch.device, n: int) -> torch.Tensor:
    """A zeroed int32 buffer of at least n counters on device, one per row and KV head of a
    paged_decode launch (last_split): the same buffer for every launch on the device until one
    needs more.

    Contract: the counters are zero at rest, each launch's last splits setting back their own,
    so launches that share them must run one after another. Two paged_decode launches that may
    run at the same time on one device (on two streams, or one a programmatic dependent launch
    of the other) must not share them. The harness orders every decode launch of a device on
    one stream; the prefill launch beside it on the side stream combines through
    _reduce_kernel and counts nothing. A buffer per (device, stream) would mean reading the
    current stream on every call: host time, which the fused combine exists to save.

    Allocated when a launch of that size is first seen, which must be outside CUDA graph
    capture (the executor runs every graph once before capturing it, so it is)."""
    held = _COUNTERS.setdefault(device, [])
    if not held or held[-1].numel() < n:
        held.append(torch.zeros(max(n, 2 * held[-1].numel() if held else n), dtype=torch.int32,
                                device=device))
        if device.type == "cuda":
            # The zeros are written on this stream; a launch on another must find them written
            # (and under capture this fails at once rather than leaving the graph a buffer
            # from its pool).
            torch.cuda.synchronize(device)
    return held[-1]


# Every buffer of paged_decode's partial results handed out, per device (decode_partials): as
# with _COUNTERS, a CUDA graph may hold the address of an older one.
_DECODE_PARTIALS: dict[torch.device, list[torch.Tensor]] = {}


def decode_partials(device: torch.device, rows: int, num_heads: int, head_dim: int,
                    num_splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """partials() of a paged_decode launch with num_splits > 1, as views of one buffer per
    device that every such launch shares (grown, by doubling, when one needs more): a launch
    then allocates nothing on the host's critical path. Sharing is safe under split_counters'
    contract, which already orders a device's paged_decode launches one after another. Buffers
    outgrown stay allocated, as the counters do. Taken when a launch shape is first seen,
    outside CUDA graph capture."""
    parts = rows * num_heads * num_splits
    size = parts * (head_dim + 1)
    held = _DECODE_PARTIALS.setdefault(device, [])
    if not held or held[-1].numel() < size:
        held.append(torch.empty(max(size, 2 * held[-1].numel() if held else size),
                                dtype=torch.float32, device=device))
    return _partial_views(held[-1], parts, head_dim)


def partials(out: torch.Tensor, rows: int, num_splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a split launch writes its partial results to be combined: float32 outputs and
    log-sum-exps, a row per query row, head and split, in one allocation (on the graph's pool
    under capture). With one split the kernel writes `out` itself: both are `out`."""
    if num_splits == 1:
        return out, out
    _, num_heads, head_dim = out.shape
    parts = rows * num_heads * num_splits
    return _partial_views(torch.empty(parts * (head_dim + 1), dtype=torch.float32,
                                      device=out.device), parts, head_dim)


def _partial_views(buffer: torch.Tensor, parts: int, head_dim: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs (parts x head_dim floats) and then the log-sum-exps (parts) of a split
    launch's partial results, at the start of a float32 buffer."""
    return buffer[: parts * head_dim], buffer[parts * head_dim : parts * (head_dim + 1)]


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
