"""A Llama-style decoder in plain torch with seeded random weights at real shapes.

RMSNorm, rotary embeddings, grouped-query attention and a SwiGLU MLP, written to follow the
operation order of transformers' Llama so that greedy tokens match it on the same weights. One
forward runs a whole engine step: every token of the step (prefill chunks and decode tokens) goes
through the linear layers together; attention writes the step's new K/V into the KV pool's slots
once, then runs one paged decode call for all decoding sequences and one paged prefill call for
all prefill chunks (each over its sequence's whole KV in the pool), both into one output; on a
GPU side by side, the prefill call on a second stream.

Under tensor parallelism (harness.gpu.tp) each rank runs this same code on its shard of the
weights and of the KV heads; the decoder's `tp` says how the shards meet again. A single rank
(SingleRank) reduces nothing, so the one-GPU path runs exactly the operations it always did.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from harness.gpu.kv_pool import KVPool, SlotIndex
from kernels.work_list import DecodeWorkList, WorkListPlan


@dataclass(frozen=True)
class DecoderConfig:
    """The shape of the decoder; rope_theta and rms_norm_eps are Llama 3's."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = None  # keys each query reads (None: all before it)

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}"
            )

    @classmethod
    def from_model_spec(cls, spec) -> DecoderConfig:
        """The decoder of a harness.model.config.ModelSpec preset (same shape, Llama 3 constants)."""
        return cls(
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            num_kv_heads=spec.num_kv_heads,
            head_dim=spec.head_dim,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            vocab_size=spec.vocab_size,
            sliding_window=spec.sliding_window,
        )


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer. qkv and gate_up are fused along the output rows (fewer launches); their
    row slices are the separate q/k/v and gate/up projections of transformers."""

    attn_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(num_heads + 2 * num_kv_heads) * head_dim, hidden]
    o: torch.Tensor  # [hidden, num_heads * head_dim]
    mlp_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]


class SingleRank:
    """No tensor parallelism: one rank holds every weight and head, so nothing is sharded,
    reduced or gathered. harness.gpu.tp.TensorParallel offers the same methods across ranks."""

    size = 1
    rank = 0

    def shard_layer(self, layer: LayerWeights) -> LayerWeights:
        return layer

    def shard_vocab(self, lm_head: torch.Tensor) -> torch.Tensor:
        return lm_head

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def greedy(self, logits: torch.Tensor) -> torch.Tensor:
        return row_max(logits)[1]

    def align(self) -> None:
        """Nothing to wait for before a timed step."""


# Chunks a row of logits is cut into for row_max's first pass: at most this many, and only a
# count that divides the row.
ROW_MAX_CHUNKS = 64


def row_max(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest value of each row of logits [S, V] and the index of its first occurrence,
    as logits.max(dim=-1) gives them, in two passes. torch reduces each row to an index in one
    thread block, so S rows over a vocabulary keep S blocks of the GPU busy for as long as one
    block takes to read V logits (the at::native::reduce_kernel of probe_steps' kernel
    tables). Here each row is first cut into chunks reduced side by side; the first chunk
    holding the row's largest value holds its first occurrence."""
    rows, width = logits.shape
    chunks = next(c for c in range(min(ROW_MAX_CHUNKS, width), 0, -1) if width % c == 0)
    if chunks == 1:
        return logits.max(dim=-1)
    part_best, part_index = logits.view(rows, chunks, width // chunks).max(dim=-1)
    best, chunk = part_best.max(dim=-1)
    return best, chunk * (width // chunks) + part_index.gather(1, chunk[:, None]).squeeze(1)


SINGLE_RANK = SingleRank()


@dataclass(frozen=True)
class DecoderWeights:
    embed: torch.Tensor  # [vocab, hidden]
    layers: tuple[LayerWeights, ...]
    norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor  # [vocab, hidden]


def random_weights(
    config: DecoderConfig, *, seed: int, dtype: torch.dtype, device: torch.device | str,
    tp=SINGLE_RANK,
) -> DecoderWeights:
    """Seeded random weights: projections N(0, 1/fan_in) so activations stay of order one and
    attention is far from uniform (the KV cache matters to every token); norms near one.

    Every rank draws the full matrices in the same order and keeps its shard of each layer as
    it goes (tp.shard_layer), so all tensor-parallel widths compute one function, and a rank
    never holds more than its shards plus one layer in full."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def matrix(rows: int, cols: int) -> torch.Tensor:
        w = torch.empty(rows, cols, dtype=dtype, device=device)
        return w.normal_(0.0, cols**-0.5, generator=gen)

    def norm() -> torch.Tensor:
        w = torch.empty(config.hidden_size, dtype=dtype, device=device)
        return w.normal_(1.0, 0.1, generator=gen)

    c = config
    qkv_rows = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
    layers = tuple(
        tp.shard_layer(LayerWeights(
            attn_norm=norm(),
            qkv=matrix(qkv_rows, c.hidden_size),
            o=matrix(c.hidden_size, c.num_heads * c.head_dim),
            mlp_norm=norm(),
            gate_up=matrix(2 * c.intermediate_size, c.hidden_size),
            down=matrix(c.hidden_size, c.intermediate_size),
        ))
        for _ in range(c.num_layers)
    )
    embed = torch.empty(c.vocab_size, c.hidden_size, dtype=dtype, device=device)
    embed.normal_(0.0, 1.0, generator=gen)
    final_norm = norm()
    return DecoderWeights(embed, layers, final_norm,
                          tp.shard_vocab(matrix(c.vocab_size, c.hidden_size)))


@dataclass(frozen=True)
class PrefillChunk:
    """Rows [start, start + num_new) of the step are one sequence's prefill tokens at positions
    context .. context + num_new - 1, after `context` tokens whose KV is already in the pool
    (a prefix-cache hit, an earlier chunk, or a recomputed prefix)."""

    start: int
    num_new: int
    context: int


@dataclass(frozen=True)
class PrefillBatch:
    """The step's prefill chunks as one paged prefill launch reads them, on the device: chunk p
    is rows query_starts[p] .. query_starts[p + 1] - 1, the last tokens of a sequence whose KV
    in the pool (through block_tables[p]) is context_lens[p] tokens long once they are written."""

    query_starts: torch.Tensor  # int32 [P + 1]
    context_lens: torch.Tensor  # int32 [P]
    block_tables: torch.Tensor  # int32 [P, max_blocks]


@dataclass(frozen=True)
class StepInputs:
    """Everything one forward needs, already on the device. Prefill rows come first, then one row
    per decoding sequence: the last num_decode_rows rows go to decode attention. A decode-only
    step has no prefills and no prefill_batch.

    A step padded to a captured size (harness/gpu/mixed_graphs.py) may give decode attention more
    rows than it has decoding sequences: the first of its last num_decode_rows rows are then
    padding of context length 0 (decode attention gives them zeros). They are never rows of
    the prefill chunks: the two attentions write disjoint rows."""

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    slot_mapping: SlotIndex  # where each row's K/V is written
    prefills: tuple[PrefillChunk, ...]
    num_decode_rows: int
    block_tables: torch.Tensor  # int32 [num_decode_rows, max_blocks]
    context_lens: torch.Tensor  # int32 [num_decode_rows], the new token included
    logit_rows: torch.Tensor  # int64 [S]: rows whose next token is sampled
    prefill_batch: PrefillBatch | None = None  # the prefills, for the kernel
    # The decode rows' work list, where the backend decodes balanced (Decoder.work_list_plan).
    decode_work: DecodeWorkList | None = None


class AttentionBackend(Protocol):
    """Stores K/V at pool slots and runs prefill and decode attention over the pool
    (harness.gpu.attention), under the decoder's sliding window when it has one."""

    def write(self, pool: KVPool, layer: int, k, v, where: SlotIndex) -> None: ...

    def prefill(self, q, cache, batch: PrefillBatch, blocks_per_segment, window: int | None,
                out=None) -> torch.Tensor: ...

    def decode(self, q, cache, block_tables, context_lens, blocks_per_segment,
               window: int | None, out=None, work: DecodeWorkList | None = None
               ) -> torch.Tensor: ...

    def work_list_plan(self, pool: KVPool, num_heads: int, dtype: torch.dtype,
                       window: int | None) -> WorkListPlan | None: ...


class ForwardingBackend:
    """An attention backend that hands every call to another: the base of wrappers that watch
    what a forward asks of its backend (override the calls to watch, and call the base's)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.prepare = backend.prepare
        self.work_list_plan = backend.work_list_plan

    def write(self, pool, layer, k, v, where) -> None:
        self.backend.write(pool, layer, k, v, where)

    def prefill(self, q, cache, batch, blocks_per_segment, window, out=None):
        return self.backend.prefill(q, cache, batch, blocks_per_segment, window, out=out)

    def decode(self, q, cache, block_tables, context_lens, blocks_per_segment, window,
               out=None, work=None):
        return self.backend.decode(q, cache, block_tables, context_lens, blocks_per_segment,
                                   window, out=out, work=work)


@dataclass(frozen=True)
class Pointwise:
    """The elementwise work between the GEMMs: add_rms_norm(x, delta | None, weight, eps) ->
    (x + delta in place, normed), silu_mul(gate_up) -> silu(gate) * up and rotary(qk, cos, sin)
    -> the rotated query and key heads. Fused Triton kernels on a GPU (a few dozen small kernels
    per layer fewer); their torch references elsewhere, which follow transformers' operation
    order exactly."""

    add_rms_norm: Callable
    silu_mul: Callable
    rotary: Callable

    @classmethod
    def for_device(cls, device: torch.device) -> Pointwise:
        from kernels import rms_norm, rotary, swiglu

        if device.type == "cuda":
            return cls(rms_norm.add_rms_norm, swiglu.silu_mul, rotary.rotary)
        return cls(rms_norm.add_rms_norm_reference, swiglu.silu_mul_reference,
                   rotary.rotary_reference)


class Decoder:
    """Runs engine steps on a KVPool; owns no KV state itself. config is the whole model's
    shape; num_heads and num_kv_heads are this rank's share of the heads."""

    def __init__(
        self, config: DecoderConfig, weights: DecoderWeights, backend: AttentionBackend,
        tp=SINGLE_RANK,
    ) -> None:
        self.config = config
        self.weights = weights
        self.backend = backend
        self.tp = tp
        self.num_heads = config.num_heads // tp.size
        self.num_kv_heads = config.num_kv_heads // tp.size
        device = weights.embed.device
        self.pointwise = Pointwise.for_device(device)
        dim = config.head_dim
        # Computed on the CPU exactly as transformers does, then moved: equal rotary tables.
        self._inv_freq = (
            1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        ).to(device)
        # Where a step's prefill attention runs beside its decode attention: few decode rows
        # and a short chunk each leave most of the GPU idle, and each other's launch latency.
        self._side = torch.cuda.Stream(device) if device.type == "cuda" else None

    @torch.inference_mode()
    def forward(self, step: StepInputs, pool: KVPool) -> torch.Tensor:
        """Logits [S, vocab] of the rows in step.logit_rows; K/V of every row land in the pool."""
        w, ops, eps = self.weights, self.pointwise, self.config.rms_norm_eps
        x = F.embedding(step.input_ids, w.embed)
        cos, sin = self._rotary(step.positions, x.dtype)
        # Each residual add is fused with the norm that follows it: the next layer's attention
        # norm, or after the last layer the final norm (row by row, so normalising every row
        # and then keeping the sampled ones gives the same logits).
        norms = [lw.attn_norm for lw in w.layers[1:]] + [w.norm]
        x, h = ops.add_rms_norm(x, None, w.layers[0].attn_norm, eps)
        for layer, (lw, next_norm) in enumerate(zip(w.layers, norms)):
            x, h = ops.add_rms_norm(x, self._attention(layer, lw, h, cos, sin, step, pool),
                                    lw.mlp_norm, eps)
            mlp = self.tp.all_reduce(F.linear(ops.silu_mul(F.linear(h, lw.gate_up)), lw.down))
            x, h = ops.add_rms_norm(x, mlp, next_norm, eps)
        return F.linear(h.index_select(0, step.logit_rows), w.lm_head)

    def work_list_plan(self, pool: KVPool) -> WorkListPlan | None:
        """How to build the work lists the backend's balanced decode reads with each step's
        decode rows (StepInputs.decode_work), or None where it decodes without."""
        return self.backend.work_list_plan(pool, self.num_heads, self.weights.embed.dtype,
                                           self.config.sliding_window)

    def next_tokens(self, step: StepInputs, pool: KVPool) -> torch.Tensor:
        """Greedy next token ids [S] of the rows in step.logit_rows (the same on every rank)."""
        return self.tp.greedy(self.forward(step, pool))

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos and a sign-folded sin: rotate_half(x) * sin == halves_swapped(x) * signed_sin
        exactly (negation is exact), in two kernels fewer per use."""
        freqs = positions[:, None].float() * self._inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        sin = emb.sin()
        signed = torch.cat((-sin[:, : freqs.shape[1]], sin[:, freqs.shape[1]:]), dim=-1)
        return emb.cos().to(dtype)[:, None, :], signed.to(dtype)[:, None, :]

    def _attention(self, layer, lw, x, cos, sin, step: StepInputs, pool: KVPool) -> torch.Tensor:
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.config.head_dim
        q_width, kv_width = heads * dim, kv_heads * dim
        qkv = F.linear(x, lw.qkv)
        # Queries and keys rotate together, in one pass.
        qk = self.pointwise.rotary(qkv[:, : q_width + kv_width].view(-1, heads + kv_heads, dim),
                                   cos, sin)
        q, k = qk[:, :heads], qk[:, heads:]
        v = qkv[:, q_width + kv_width :].view(-1, kv_heads, dim)
        self.backend.write(pool, layer, k, v, step.slot_mapping)

        cache, bps = pool.layer(layer), pool.blocks_per_segment
        window = self.config.sliding_window
        if step.prefill_batch is None:  # every row decodes
            out = self.backend.decode(q, cache, step.block_tables, step.context_lens, bps, window,
                                      work=step.decode_work)
        else:  # one launch per kind of row, into disjoint rows of one output
            out = torch.empty_like(q)
            first = q.shape[0] - step.num_decode_rows
            # Prefill launched first: its small grid starts, and the decode grid takes the SMs
            # it leaves (benchmarks/probe_mixed_attention.py measured both orders).
            side = self._side if step.num_decode_rows else None
            if side is not None:
                side.wait_stream(torch.cuda.current_stream())
            with nullcontext() if side is None else torch.cuda.stream(side):
                self.backend.prefill(q, cache, step.prefill_batch, bps, window, out=out)
            if step.num_decode_rows:
                self.backend.decode(q[first:], cache, step.block_tables, step.context_lens, bps,
                                    window, out=out[first:], work=step.decode_work)
            if side is not None:
                torch.cuda.current_stream().wait_stream(side)
        # Row-parallel: each rank's heads give a partial sum of the output projection.
        return self.tp.all_reduce(F.linear(out.reshape(-1, q_width), lw.o))
