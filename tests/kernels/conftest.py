"""Kernel tests run on the GPU when there is one, else through the Triton interpreter on the CPU
(tests/conftest.py sets TRITON_INTERPRET before anything imports triton)."""
import math

import pytest

torch = pytest.importorskip("torch")


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

    def widened(self, dtype=torch.float64):
        """The segment lists in a wide type, for the reference."""
        def wide(segments):
            return [None if t is None else t.to(dtype) for t in segments]
        return wide(self.k_segments), wide(self.v_segments)


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
