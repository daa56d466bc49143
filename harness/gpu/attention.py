"""Attention backends over the KV pool: the Triton kernels on a GPU, the torch reference elsewhere.

Both store new K/V at the allocator's slots, run prefill attention for every prefill chunk of a
step in one call per layer and decode attention for every decoding sequence in another, each
into the given rows of one output, under the model's sliding window when it has one (block-table
entries before the window may read NO_BLOCK: neither reads them); they differ only in which
kernels do it. Over a float8 pool both quantize on write and dequantize on read with the layer's
scales (LayerCache.k_scale, v_scale).
"""
from __future__ import annotations

import dataclasses

import torch

from harness.gpu.kv_pool import KVPool, LayerCache, SlotIndex
from harness.gpu.model import PrefillBatch
from harness.model.config import DECODE_BALANCE
from kernels.work_list import DecodeWorkList

# Split counts of the paged decode kernel are rounded down to powers of two up to this, so
# that warmup() can compile every variant a run will launch before any step is timed. Paged
# prefill chooses its own, powers of two up to kernels.split_kv.MAX_SPLITS, the same cap.
MAX_SPLITS = 64


class TritonAttention:
    """kernels.kv_write.write_kv, kernels.paged_prefill.paged_prefill and
    kernels.paged_decode.paged_decode, with the segment table built once per change of the live
    segments.

    decode_balance (DECODE_BALANCE): which decode steps run kernels.balanced_decode, which
    shares the keys out evenly whatever the mix of context lengths, over a work list
    (StepInputs.decode_work, staged by the executor where work_list_plan's plan applies to the
    step's rows) instead of paged_decode; decode_programs overrides its programs per KV head
    (default: one wave of the GPU)."""

    name = "triton"
    graph_safe = True  # no host synchronisation: a decode step can be captured
    indexes_by_segment = False  # the kernels read the segment table: global slot ids suffice

    def __init__(self, *, decode_balance: str = "auto",
                 decode_programs: int | None = None) -> None:
        from kernels import decode_launch, kv_write, paged_decode, paged_prefill, segments
        from kernels.balanced_decode import paged_decode_balanced, plan_work_lists

        if decode_balance not in DECODE_BALANCE:
            raise ValueError(f"decode_balance must be one of {sorted(DECODE_BALANCE)}, "
                             f"not {decode_balance!r}")
        self.decode_balance = decode_balance
        self.decode_programs = decode_programs
        self._write_kv = kv_write.write_kv
        self._paged_prefill = paged_prefill.paged_prefill
        self._paged_decode = paged_decode.paged_decode
        self._decode_shape = paged_decode.DecodeShape
        self._paged_decode_balanced = paged_decode_balanced
        self._plan_work_lists = plan_work_lists
        self._choose_splits = decode_launch.choose_num_splits
        self._max_keys = paged_decode.max_keys
        self._segment_table = segments.segment_table
        self._segment_offsets = segments.segment_offsets
        self._align = segments.ALIGN_BYTES
        self._sms: int | None = None
        self._splits: dict[tuple[int, int], int] = {}  # by (batch, table width)

    def prepare(self, k_segments: list, v_segments: list, previous):
        """The kernels' segment table of one layer, addressed from a fixed anchor tensor
        instead of the first live segment, and updated in place when segments come and go:
        its tensors keep their addresses, so a captured CUDA graph stays valid. Offsets are
        signed (a segment may lie below the anchor)."""
        checked = self._segment_table(k_segments, v_segments)  # validates shapes and alignment
        anchor = previous.k_base if previous is not None else torch.empty(
            self._align // checked.k_base.element_size(), dtype=checked.dtype,
            device=checked.k_base.device)
        k_offsets = self._segment_offsets(k_segments, anchor)
        v_offsets = self._segment_offsets(v_segments, anchor)
        if previous is not None and previous.k_offsets.shape == k_offsets.shape:
            previous.k_offsets.copy_(k_offsets)
            previous.v_offsets.copy_(v_offsets)
            return previous
        return dataclasses.replace(checked, k_base=anchor, v_base=anchor, k_offsets=k_offsets,
                                   v_offsets=v_offsets)

    def write(self, pool: KVPool, layer: int, k, v, where: SlotIndex) -> None:
        cache = pool.layer(layer)
        self._write_kv(k, v, None, None, where.slots, pool.block_size, pool.blocks_per_segment,
                       table=cache.handle, k_scale=cache.k_scale, v_scale=cache.v_scale)

    def prefill(self, q, cache: LayerCache, batch: PrefillBatch, blocks_per_segment, window,
                out=None):
        return self._paged_prefill(q, None, None, batch.block_tables, batch.query_starts,
                                   batch.context_lens, blocks_per_segment, table=cache.handle,
                                   k_scale=cache.k_scale, v_scale=cache.v_scale, out=out,
                                   window=window)

    def work_list_plan(self, pool: KVPool, num_heads: int, dtype: torch.dtype,
                       window: int | None):
        """How to build the decode work lists of queries in dtype over this pool
        (kernels.work_list.WorkListPlan, its skew decode_balance's), or None with "off"."""
        skew = DECODE_BALANCE[self.decode_balance]
        if skew is None:
            return None
        dim = pool.head_dim
        shape = self._decode_shape(
            batch=1, num_heads=num_heads, head_dim=dim, q_strides=(num_heads * dim, dim),
            dtype=dtype, device=pool.device, num_kv_heads=pool.num_kv_heads,
            block_size=pool.block_size, blocks_per_segment=pool.blocks_per_segment,
            cache_dtype=pool.dtype, table_width=1, table_stride=1, window=window)
        return dataclasses.replace(self._plan_work_lists(shape, self.decode_programs), skew=skew)

    def decode(self, q, cache: LayerCache, block_tables, context_lens, blocks_per_segment,
               window, out=None, work=None):
        table = cache.handle
        if work is not None:
            return self._paged_decode_balanced(q, None, None, block_tables, work,
                                               blocks_per_segment, table=table,
                                               k_scale=cache.k_scale, v_scale=cache.v_scale,
                                               out=out)
        key = (q.shape[0], block_tables.shape[1])
        splits = self._splits.get(key)
        if splits is None:
            splits = self._splits[key] = self.num_splits(q, table, block_tables, window)
        return self._paged_decode(q, None, None, block_tables, context_lens, blocks_per_segment,
                                  num_splits=splits, table=table, k_scale=cache.k_scale,
                                  v_scale=cache.v_scale, out=out, window=window)

    def num_splits(self, q, table, block_tables, window) -> int:
        """The split count decode() gives paged_decode for these shapes (without a work list):
        choose_num_splits' for contexts as long as the block tables, rounded down to a power
        of two."""
        if self._sms is None:  # the Triton interpreter runs CPU tensors: one "SM"
            cuda = q.device.type == "cuda"
            self._sms = torch.cuda.get_device_properties(q.device).multi_processor_count \
                if cuda else 1
        keys = self._max_keys(block_tables.shape[1] * table.block_size, window)
        splits = self._choose_splits(q.shape[0], table.num_kv_heads, keys, self._sms)
        return min(1 << (splits.bit_length() - 1), MAX_SPLITS)

    def warmup(self, pool: KVPool, num_heads: int, dtype: torch.dtype,
               window: int | None) -> None:
        """Compile every kernel variant a run can launch (each split count of the decode and
        the prefill kernels, the balanced decode where a run stages work lists, the KV write;
        with or without a window) for queries and new K/V in dtype before any step is timed.
        Nothing in the pool is changed."""
        cache = pool.layer(0)
        table = cache.handle
        scales = {"k_scale": cache.k_scale, "v_scale": cache.v_scale}
        device = table.k_base.device
        q = torch.zeros(1, num_heads, pool.head_dim, dtype=dtype, device=device)
        first_block = pool.live_segments()[0] * pool.blocks_per_segment
        blocks = torch.full((1, 16), first_block, dtype=torch.int32, device=device)
        lens = torch.ones(1, dtype=torch.int32, device=device)
        starts = torch.tensor([0, 1], dtype=torch.int32, device=device)
        for splits in (1 << i for i in range(MAX_SPLITS.bit_length())):
            self._paged_decode(q, None, None, blocks, lens, pool.blocks_per_segment,
                               num_splits=splits, table=table, window=window, **scales)
            self._paged_prefill(q, None, None, blocks, starts, lens, pool.blocks_per_segment,
                                table=table, window=window, num_splits=splits, **scales)
        # Prefill's own split choice reads the occupancy of its compiled kernels: first here.
        self._paged_prefill(q, None, None, blocks, starts, lens, pool.blocks_per_segment,
                            table=table, window=window, **scales)
        plan = self.work_list_plan(pool, num_heads, dtype, window)
        if plan is not None:
            work = torch.from_numpy(plan.build(lens.cpu().numpy())).to(device)
            self._paged_decode_balanced(q, None, None, blocks, DecodeWorkList(plan, 1, work),
                                        pool.blocks_per_segment, table=table, **scales)
        kv = torch.zeros(1, pool.num_kv_heads, pool.head_dim, dtype=dtype, device=device)
        skip = torch.full((1,), -1, dtype=torch.int64, device=device)  # < 0: nothing written
        self._write_kv(kv, kv, None, None, skip, pool.block_size, pool.blocks_per_segment,
                       table=table, **scales)
        if device.type == "cuda":
            torch.cuda.synchronize(device)


class ReferenceAttention:
    """kernels.reference (gather, then attend in float32) and torch indexing for the writes."""

    name = "reference"
    graph_safe = False  # reads context lengths on the host
    indexes_by_segment = True  # torch indexing writes each segment's tensor
    prepare = None

    def __init__(self) -> None:
        from kernels.reference import quantize_kv, reference_decode, reference_prefill

        self._quantize = quantize_kv
        self._reference_decode = reference_decode
        self._reference_prefill = reference_prefill

    def write(self, pool: KVPool, layer: int, k, v, where: SlotIndex) -> None:
        cache = pool.layer(layer)
        if cache.k_scale is not None:
            k, v = self._quantize(k, cache.k_scale), self._quantize(v, cache.v_scale)
        pool.write(layer, k, v, where)

    def prefill(self, q, cache: LayerCache, batch: PrefillBatch, blocks_per_segment, window,
                out=None):
        result = self._reference_prefill(q, cache.k_segments, cache.v_segments,
                                         batch.block_tables, batch.query_starts,
                                         batch.context_lens, blocks_per_segment,
                                         k_scale=cache.k_scale, v_scale=cache.v_scale,
                                         window=window)
        return _into(result, q.dtype, out, slice(0, int(batch.query_starts[-1])))

    def work_list_plan(self, pool: KVPool, num_heads: int, dtype: torch.dtype,
                       window: int | None) -> None:
        """No work lists: the reference reads the context lengths themselves."""

    def decode(self, q, cache: LayerCache, block_tables, context_lens, blocks_per_segment,
               window, out=None, work=None):
        result = self._reference_decode(q, cache.k_segments, cache.v_segments, block_tables,
                                        context_lens, blocks_per_segment, k_scale=cache.k_scale,
                                        v_scale=cache.v_scale, window=window)
        return _into(result, q.dtype, out, slice(None))

    def warmup(self, pool: KVPool, num_heads: int, dtype: torch.dtype,
               window: int | None) -> None:
        """Nothing to compile."""


def _into(result: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None, rows: slice):
    """The kernels' out= for the references: result's rows written into out, or result."""
    if out is None:
        return result.to(dtype)
    out[rows] = result[rows]
    return out


def balance_skew(device: torch.device, decode_balance: str) -> float | None:
    """The skew above which default_backend's backend decodes a step over a work list
    (kernels.work_list.WorkListPlan.skew; None: never, as the reference)."""
    return DECODE_BALANCE[decode_balance] if device.type == "cuda" else None


def default_backend(device: torch.device, *,
                    decode_balance: str = "auto") -> TritonAttention | ReferenceAttention:
    """The Triton kernels on a GPU (decode_balance as TritonAttention takes it), the reference
    elsewhere (which has no use for work lists)."""
    if device.type == "cuda":
        return TritonAttention(decode_balance=decode_balance)
    return ReferenceAttention()
