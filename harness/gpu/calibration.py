"""Scales of an fp8 KV cache, calibrated once, from a calibration batch.

A prefill of a few seeded random prompts runs with the KV in the decoder's own dtype; the K and
V every layer writes give kernels.fp8.kv_scales its per-KV-head amax, and so the smallest
scales at which none of those values saturates. vLLM takes the same amax / 448 from the first
batch it serves; a fixed batch keeps the scales, and so a run's tokens, independent of the
trace. A later value past the calibrated range is clamped by the kernels (kernels/fp8.py).
"""
from __future__ import annotations

import numpy as np
import torch

from harness.engine.executor import KVGeometry
from harness.gpu.batching import DecodeWork, PrefillWork, layout_step, to_device
from harness.gpu.device_tables import fixed_tables
from harness.gpu.kv_pool import KVPool
from harness.gpu.model import Decoder, ForwardingBackend
from kernels.fp8 import kv_scales

CALIBRATION_PROMPTS = 4
CALIBRATION_TOKENS = 256
_BLOCK_SIZE = 16
_STREAM = 3  # seeds the prompts apart from harness.gpu.prompts' streams (1 and 2)


class _ScaleRecorder(ForwardingBackend):
    """Keeps, per layer, the scales of the K and V the backend is asked to write."""

    def __init__(self, backend, num_layers: int) -> None:
        super().__init__(backend)
        self.scales: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    def write(self, pool, layer, k, v, where) -> None:
        self.scales[layer] = (kv_scales(k, per_head=True), kv_scales(v, per_head=True))
        super().write(pool, layer, k, v, where)


def calibrate_kv_scales(decoder: Decoder, *, seed: int, prompts: int = CALIBRATION_PROMPTS,
                        tokens: int = CALIBRATION_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [num_layers, num_kv_heads] scales for K and for V (this rank's KV heads, under
    tensor parallelism), from a prefill of `prompts` prompts of `tokens` tokens drawn with
    seed."""
    if tokens % _BLOCK_SIZE or prompts < 1:
        raise ValueError(f"calibration needs >= 1 prompt of a multiple of {_BLOCK_SIZE} tokens, "
                         f"got {prompts} x {tokens}")
    config, device = decoder.config, decoder.weights.embed.device
    slots = prompts * tokens
    recorder = _ScaleRecorder(decoder.backend, config.num_layers)
    pool = KVPool(KVGeometry(_BLOCK_SIZE, slots // _BLOCK_SIZE, slots),
                  num_layers=config.num_layers, num_kv_heads=decoder.num_kv_heads,
                  head_dim=config.head_dim, dtype=decoder.weights.embed.dtype, device=device,
                  prepare=recorder.prepare)
    pool.sync([0], [])
    rng = np.random.default_rng([seed, _STREAM])
    work = [PrefillWork(i, rng.integers(1, config.vocab_size, tokens), 0, tokens, 1)
            for i in range(prompts)]
    tables = fixed_tables(np.arange(slots // _BLOCK_SIZE).reshape(prompts, -1), device)
    empty = np.zeros(0, np.int64)
    host = layout_step(work, DecodeWork(empty, empty, empty), np.arange(prompts), tables.host.array,
                       _BLOCK_SIZE)
    step = to_device(host, pool, tables, device, by_segment=decoder.backend.indexes_by_segment)
    Decoder(config, decoder.weights, recorder, decoder.tp).forward(step, pool)
    k_scales, v_scales = zip(*recorder.scales)
    return torch.stack(k_scales), torch.stack(v_scales)
