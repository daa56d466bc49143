"""Kernel tests run on the GPU when there is one, else through the Triton interpreter on the CPU
(tests/conftest.py sets TRITON_INTERPRET before anything imports triton)."""
import math

import pytest

torch = pytest.importorskip("torch")

from kernels.fp8 import kv_scales
from kernels.reference import quantize_kv
from kernels.segments import stored_values


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class PagedCache:
    """A random paged KV cache over several segments, with the block tables that address it."""

    def __init__(self, *, context_lens, num_kv_heads, head_dim, block_size, blocks_per_segment,
                 num_segments, dtype, device, seed, unbacked=(), shuffle=True, spare_blocks=2):
        gen = torch.Generator().manual_seed(seed)
        shape = (blocks_per_segment, block_size, num_kv_heads, head_dim)

        def segment(s):
            if s in unbacked:
                return None
            return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

        self.k_segments = [segment(s) for s in range(num_segments)]
        self.v_segments = [segment(s) for s in range(num_segments)]
        backed = [b for b in range(num_segments * blocks_per_segment)
                  if b // blocks_per_segment not in unbacked]
        if shuffle:
            backed = [backed[i] for i in torch.randperm(len(backed), generator=gen).tolist()]
        needed = [math.ceil(n / block_size) for n in context_lens]
        assert sum(needed) <= len(backed), "test cache too small for the contexts"
        width = max(needed) + spare_blocks
        table = torch.full((len(context_lens), width), -1, dtype=torch.int32)
        for row, n in enumerate(needed):
            table[row, :n] = torch.tensor(backed[:n], dtype=torch.int32)
            backed = backed[n:]
        self.block_tables = table.to(device)
        self.context_lens = torch.tensor(context_lens, dtype=torch.int32, device=device)
        self.blocks_per_segment = blocks_per_segment
        self.block_size = block_size
        self.spare = backed  # blocks no sequence uses

    def release_before(self, first_tokens, *, poison: bool):
        """What a sliding window leaves: the block-table entries of blocks wholly before
        first_tokens[b] point at a spare block of NaN (poison: a kernel that reads a key from
        one returns NaN) or hold -1 (the entry of a block an allocator let go)."""
        target = -1
        if poison:
            target = self.spare[0]
            segment, offset = divmod(target, self.blocks_per_segment)
            for segments in (self.k_segments, self.v_segments):
                segments[segment][offset] = float("nan")
        for row, first in enumerate(first_tokens):
            self.block_tables[row, : first // self.block_size] = target

    def widened(self, dtype=torch.float64):
        """The segment lists in a wide type, for the reference."""
        def wide(segments):
            return [None if t is None else t.to(dtype) for t in segments]
        return wide(self.k_segments), wide(self.v_segments)

    def scale_heads(self, k_factors, v_factors):
        """Multiply K head h by k_factors[h] and V head h by v_factors[h]: heads of different
        ranges, as real models have."""
        for segments, factors in ((self.k_segments, k_factors), (self.v_segments, v_factors)):
            factors = torch.tensor(factors, dtype=torch.float32)
            for t in segments:
                if t is not None:
                    t.copy_(t.float() * factors.to(t.device)[:, None])

    def quantized(self, per_head):
        """An fp8 copy of this cache, calibrated on all of it (kernels.fp8.kv_scales), V
        transposed in runs as an fp8 cache stores it (kernels/segments.py): the segment lists
        and k_scale, v_scale."""
        def convert(segments, layout):
            live = torch.cat([t for t in segments if t is not None])
            scale = kv_scales(live.flatten(0, 1), per_head=per_head)
            return [None if t is None else layout(quantize_kv(t, scale)) for t in segments], scale
        (k_segments, k_scale), (v_segments, v_scale) = (
            convert(self.k_segments, lambda t: t),
            convert(self.v_segments, stored_values))
        return k_segments, v_segments, k_scale, v_scale


@pytest.fixture
def make_cache(device):
    def make(**kwargs):
        kwargs.setdefault("device", device)
        return PagedCache(**kwargs)
    return make


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives inf."""
    diff = (out.double() - ref.double()).norm().item()
    err = diff / max(ref.double().norm().item(), 1e-30)
    return err if math.isfinite(err) else math.inf


@pytest.fixture
def rel_err():
    return relative_error


def fp8_error_bound(v_amax: float) -> float:
    """A bound on the output error of attention over an e4m3 cache against the unquantized
    cache: one e4m3 step at the top of V's range, 32 / 448 of it. Rounding moves a V element
    by at most half that step, and an output row is an average of V rows; K's rounding moves
    the softmax weights, which for a row over a few keys with peaked weights can add about as
    much again. A kernel that mixes up scales, heads or rounding lands far outside it."""
    return v_amax * 32 / 448


@pytest.fixture
def fp8_bound():
    return fp8_error_bound
