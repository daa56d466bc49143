"""How far a KV cache of another dtype (fp8) moves a decoder's outputs from those over a cache
in the decoder's own dtype (bf16 on a GPU), on the same weights.

Two pools, one decoder, in lock step: a prefill of the prompts, then greedy decode steps. The
reference run samples its own greedy tokens; the other is fed the same tokens (teacher
forcing), so every step compares outputs over one context: the attention output of every layer,
the logits, and whether its greedy choice is the reference's. A sequence's first disagreement is
where free-running generation over that cache would first leave the reference's tokens: up to
there, both saw the same tokens. The layers after the first see the earlier layers' error too:
the attention error is end to end, not one kernel's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.engine.executor import KVGeometry
from harness.gpu.batching import DecodeWork, PrefillWork, layout_step, to_device
from harness.gpu.calibration import calibrate_kv_scales
from harness.gpu.device_tables import DeviceTables, fixed_tables
from harness.gpu.executor import pool_dtype
from harness.gpu.kv_pool import KVPool
from harness.gpu.model import Decoder, ForwardingBackend

BLOCK_SIZE = 16


@dataclass(frozen=True)
class SequenceAccuracy:
    """One prompt's comparison over `steps` greedy tokens (the prefill's sample first)."""

    prompt_tokens: int
    steps: int
    attention_max_abs_err: float  # over layers, rows and steps
    attention_max_abs: float  # the reference's largest |attention output|, for scale
    logits_max_abs_err: float
    logits_max_abs: float
    token_agreement: float  # share of steps whose greedy token is the reference's
    first_divergence: int  # the first step whose greedy token is not; steps when none is


class _Tap(ForwardingBackend):
    """Keeps the attention outputs of the current forward, one per layer in order."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.outputs: list[torch.Tensor] = []

    def prefill(self, q, cache, batch, blocks_per_segment, window, out=None):
        self.outputs.append(super().prefill(q, cache, batch, blocks_per_segment, window,
                                            out=out))
        return self.outputs[-1]

    def decode(self, q, cache, block_tables, context_lens, blocks_per_segment, window,
               out=None, work=None):
        self.outputs.append(super().decode(q, cache, block_tables, context_lens,
                                           blocks_per_segment, window, out=out, work=work))
        return self.outputs[-1]


class _Side:
    """One of the two runs: a decoder over its own pool."""

    def __init__(self, decoder: Decoder, geometry: KVGeometry, dtype: torch.dtype) -> None:
        self.tap = _Tap(decoder.backend)
        self.decoder = Decoder(decoder.config, decoder.weights, self.tap, decoder.tp)
        self.pool = KVPool(geometry, num_layers=decoder.config.num_layers,
                           num_kv_heads=decoder.num_kv_heads, head_dim=decoder.config.head_dim,
                           dtype=dtype, device=decoder.weights.embed.device,
                           prepare=self.tap.prepare)
        self.pool.sync([0], [])
        self._by_segment = decoder.backend.indexes_by_segment

    def forward(self, host, tables: DeviceTables) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [S, vocab] and attention outputs [layers, T, Hq, D] of one step (every step
        all prefill or all decode: one attention call per layer), float32."""
        self.tap.outputs.clear()
        step = to_device(host, self.pool, tables, self.pool.device, by_segment=self._by_segment)
        logits = self.decoder.forward(step, self.pool).float()
        return logits, torch.stack(self.tap.outputs).float()


def kv_dtype_accuracy(decoder: Decoder, prompts: list[np.ndarray], steps: int, *,
                      kv_dtype: str, seed: int) -> list[SequenceAccuracy]:
    """Each prompt's outputs over a kv_dtype cache against those over the decoder's own dtype,
    for `steps` greedy tokens; fp8 scales are calibrated as the executor calibrates them
    (harness.gpu.calibration, with seed). kv_dtype bf16 compares the reference with itself."""
    if decoder.tp.size != 1:
        raise ValueError("the accuracy comparison runs on one rank (tp 1)")
    if steps < 1 or not prompts or min(len(p) for p in prompts) < 1:
        raise ValueError(f"need >= 1 step and non-empty prompts, got {steps} steps and prompt "
                         f"lengths {[len(p) for p in prompts]}")
    lengths = np.array([len(p) for p in prompts], np.int64)
    blocks = -(-(lengths + steps) // BLOCK_SIZE)
    block_tables = np.zeros((len(prompts), int(blocks.max())), np.int32)
    for row, (start, count) in enumerate(zip(np.cumsum(blocks) - blocks, blocks)):
        block_tables[row, :count] = np.arange(start, start + count)
    tables = fixed_tables(block_tables, decoder.weights.embed.device)
    table_rows = np.arange(len(prompts))
    total = int(blocks.sum())
    geometry = KVGeometry(BLOCK_SIZE, total, total * BLOCK_SIZE)
    own = decoder.weights.embed.dtype
    reference = _Side(decoder, geometry, own)
    other = _Side(decoder, geometry, pool_dtype(kv_dtype, own))
    if other.pool.scales is not None:
        other.pool.set_scales(*calibrate_kv_scales(decoder, seed=seed))

    seq_ids = list(range(len(prompts)))
    empty = np.zeros(0, np.int64)
    host = layout_step([PrefillWork(i, np.asarray(p, np.int64), 0, len(p), 1)
                        for i, p in enumerate(prompts)], DecodeWork(empty, empty, empty),
                       table_rows, tables.host.array, BLOCK_SIZE)
    rows = [np.arange(a, b) for a, b in zip(host.query_starts[:-1], host.query_starts[1:])]
    tally = _Tally(len(prompts), steps)
    for step in range(steps):
        ref_logits, ref_attn = reference.forward(host, tables)
        logits, attn = other.forward(host, tables)
        tokens = ref_logits.argmax(-1)
        tally.add(step, rows, ref_attn, attn, ref_logits, logits, tokens, logits.argmax(-1))
        if step + 1 < steps:
            host = layout_step([], DecodeWork(seq_ids, tokens.cpu().numpy(),
                                              lengths + step + 1), table_rows,
                               tables.host.array, BLOCK_SIZE)
            rows = [np.array([i]) for i in seq_ids]
    return tally.results(lengths)


class _Tally:
    """Running per-sequence maxima and agreement over the steps."""

    def __init__(self, num_seqs: int, steps: int) -> None:
        self.steps = steps
        self.figures = np.zeros((4, num_seqs))  # attention err, |attention|, logits err, |logits|
        self.agree = np.zeros((steps, num_seqs), bool)

    def add(self, step, rows, ref_attn, attn, ref_logits, logits, ref_tokens, tokens) -> None:
        attn_err = (attn - ref_attn).abs().amax(dim=(0, 2, 3)).cpu().numpy()
        attn_abs = ref_attn.abs().amax(dim=(0, 2, 3)).cpu().numpy()
        for seq, seq_rows in enumerate(rows):
            self.figures[0, seq] = max(self.figures[0, seq], attn_err[seq_rows].max())
            self.figures[1, seq] = max(self.figures[1, seq], attn_abs[seq_rows].max())
        self.figures[2] = np.maximum(self.figures[2],
                                     (logits - ref_logits).abs().amax(-1).cpu().numpy())
        self.figures[3] = np.maximum(self.figures[3], ref_logits.abs().amax(-1).cpu().numpy())
        self.agree[step] = (tokens == ref_tokens).cpu().numpy()

    def results(self, lengths: np.ndarray) -> list[SequenceAccuracy]:
        out = []
        for seq, length in enumerate(lengths.tolist()):
            agree = self.agree[:, seq]
            first = int(np.argmin(agree)) if not agree.all() else self.steps
            out.append(SequenceAccuracy(length, self.steps, *map(float, self.figures[:, seq]),
                                        token_agreement=float(agree.mean()),
                                        first_divergence=first))
        return out
