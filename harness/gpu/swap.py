"""CPU swap space: the KV of swapped-out sequences in pinned host memory.

A swap-out copies every layer's K and V of a sequence's written slots to the host (device to
pinned memory, asynchronous on the current stream, so it is ordered before any later write to
those slots); a swap-in copies them back into whatever slots the allocator gives next. The
scheduler bounds the total (swap_space_bytes); this only holds the bytes.
"""
from __future__ import annotations

import torch


class SwapSpace:
    def __init__(self, device: torch.device) -> None:
        self._pin = device.type == "cuda"
        self._held: dict[int, torch.Tensor] = {}

    def save(self, seq_id: int, kv: torch.Tensor) -> None:
        """Keep kv [num_layers, 2, tokens, Hkv, D] (on the device) in host memory."""
        host = torch.empty(kv.shape, dtype=kv.dtype, pin_memory=self._pin)
        host.copy_(kv, non_blocking=True)
        self._held[seq_id] = host

    def load(self, seq_id: int, device: torch.device) -> torch.Tensor:
        """Give back (and forget) a sequence's KV, on its way to the device."""
        return self._held.pop(seq_id).to(device, non_blocking=True)

    def drop(self, seq_id: int) -> None:
        self._held.pop(seq_id, None)
