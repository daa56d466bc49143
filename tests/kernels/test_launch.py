"""DirectLaunch: the JIT for a launch it has not seen, the compiled kernel for one it has."""
import enum

import pytest

torch = pytest.importorskip("torch")

from triton.compiler import CompiledKernel  # noqa: E402

import triton  # noqa: E402

import kernels.launch as launch_module  # noqa: E402
from kernels.launch import DirectLaunch, specialization  # noqa: E402


class FakeCompiled(CompiledKernel):
    """Records direct launches (the real one needs a GPU): calls holds every launch's grid and
    arguments, through the launcher itself (launched: the stream, handle and metadata it was
    given) or through the kernel's own launch (hooked)."""

    function = "handle"
    packed_metadata = "metadata"

    def __init__(self):
        self.calls = []
        self.launched = []
        self.hooked = 0
        self.module = None  # nothing loaded, nothing to unload

    def run(self, grid_x, grid_y, grid_z, stream, function, metadata, launch_metadata,
            enter_hook, exit_hook, *args):
        self.calls.append(((grid_x, grid_y, grid_z), args))
        self.launched.append((stream, function, metadata, launch_metadata, enter_hook,
                              exit_hook))

    def __getitem__(self, grid):
        def runner(*args):
            self.hooked += 1
            self.calls.append((grid, args))
        return runner


@pytest.fixture(autouse=True)
def stream(monkeypatch):
    """The stream a direct launch reads (there is no CUDA device here)."""
    monkeypatch.setattr(launch_module, "current_stream", lambda: 7)


class FakeJit:
    """Stands in for a triton.jit kernel of parameters (X, n, scale, BLOCK, MODE)."""

    arg_names = ["X", "n", "scale", "BLOCK", "MODE"]

    def __init__(self, compiles: bool):
        self.compiles = compiles
        self.calls = []
        self.compiled = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            if not self.compiles:
                return None  # the interpreter compiles nothing
            self.compiled.append(FakeCompiled())
            return self.compiled[-1]
        return run


def test_a_seen_specialisation_launches_the_compiled_kernel():
    jit = FakeJit(compiles=True)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {"num_warps": 4})
    x = torch.zeros(64)
    launch((2, 1, 1), x, 32, 0.5)
    assert jit.calls == [((2, 1, 1), (x, 32, 0.5), {"MODE": "a", "BLOCK": 64, "num_warps": 4})]
    launch((3, 1, 1), x, 48, 0.25)  # 48 specialises as 32 does; floats never do
    assert len(jit.calls) == 1
    # Tensors go to the compiled launcher as their addresses; with no launch hook registered,
    # it gets none and no metadata.
    assert jit.compiled[0].calls == [((3, 1, 1), (x.data_ptr(), 48, 0.25, 64, "a"))]
    assert jit.compiled[0].launched == [(7, "handle", "metadata", None, None, None)]


def test_a_registered_launch_hook_gets_the_kernels_own_launch():
    jit = FakeJit(compiles=True)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {})
    x = torch.zeros(64)
    launch((1, 1, 1), x, 32, 0.5)
    hooks = triton.knobs.runtime.launch_enter_hook
    hook = lambda metadata: None  # noqa: E731
    hooks.add(hook)
    try:
        launch((1, 1, 1), x, 32, 0.5)
    finally:
        hooks.remove(hook)
    launch((1, 1, 1), x, 32, 0.5)
    compiled = jit.compiled[0]
    assert compiled.hooked == 1 and len(compiled.launched) == 1 and len(compiled.calls) == 2


@pytest.mark.parametrize("changed", [
    lambda x: (x[1:], 32, 0.5),  # no longer 16-byte aligned
    lambda x: (x.double(), 32, 0.5),  # another dtype
    lambda x: (x, 1, 0.5),  # an integer equal to 1 is a constant to the JIT
    lambda x: (x, 33, 0.5),  # no longer divisible by 16
    lambda x: (x, 2**40, 0.5),  # a 64-bit integer
])
def test_another_specialisation_goes_through_the_jit(changed):
    jit = FakeJit(compiles=True)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {})
    x = torch.zeros(64)
    launch((1, 1, 1), x, 32, 0.5)
    launch((1, 1, 1), *changed(x))
    assert len(jit.calls) == 2 and jit.compiled[0].calls == []
    launch((1, 1, 1), *changed(x))  # known from then on
    assert len(jit.calls) == 2 and len(jit.compiled[1].calls) == 1


def test_without_a_compiled_kernel_every_launch_goes_through_the_jit():
    jit = FakeJit(compiles=False)
    launch = DirectLaunch(jit, {"MODE": "a", "BLOCK": 64}, {})
    for _ in range(3):
        launch((1, 1, 1), torch.zeros(4), 16, 1.0)
    assert len(jit.calls) == 3


def test_specialization_classes():
    def key(*args):
        return specialization(args)[0]

    x = torch.zeros(8)
    assert key(x) == key(torch.ones(8))
    assert key(True) != key(1)
    assert key(16) == key(4096) != key(8)
    assert key(0.5) == key(2.0)
    # Subclasses are keyed as their base: an int enum as an int, a parameter as a tensor.
    assert key(enum.IntEnum("Width", {"WIDE": 32}).WIDE) == key(32)
    assert key(torch.nn.Parameter(torch.ones(8))) == key(x)
    assert key(None) == (None,) and key(False) == (False,)


def test_specialization_binds_tensors_as_addresses_and_keeps_other_arguments():
    x = torch.zeros(8)
    assert specialization((x, 3, 0.5, None, True))[1] == (x.data_ptr(), 3, 0.5, None, True)


def test_a_host_tensor_is_another_specialisation_than_a_device_one():
    """The launcher's check that turns host tensors away is skipped for addresses: a host
    tensor must not take a launch compiled for device tensors."""
    assert specialization((torch.zeros(8),))[0] == ((torch.float32, True, False),)


class RecordingKernel(FakeJit):
    """A fake of one of the attention kernels: its parameters, nothing run."""

    def __init__(self, real):
        super().__init__(compiles=True)
        self.arg_names = real.arg_names

    def launches(self):
        """Every launch's arguments by parameter name, the JIT's and the direct ones in order."""
        named = [dict(zip(self.arg_names, args)) | kwargs for _, args, kwargs in self.calls]
        direct = [dict(zip(self.arg_names, args)) for c in self.compiled for _, args in c.calls]
        return named, direct


def _fp8_calls(kind, cache, q, k_scale, v_scale, k8, v8):
    from kernels.paged_decode import paged_decode
    from kernels.paged_prefill import paged_prefill

    if kind == "decode":
        return lambda **kw: paged_decode(q, kw.get("k", k8), kw.get("v", v8), cache.block_tables,
                                         cache.context_lens, cache.blocks_per_segment,
                                         num_splits=1, k_scale=kw.get("k_scale", k_scale),
                                         v_scale=kw.get("v_scale", v_scale))
    starts = torch.tensor([0, 1, 3], dtype=torch.int32)
    return lambda **kw: paged_prefill(q, kw.get("k", k8), kw.get("v", v8), cache.block_tables,
                                      starts, cache.context_lens, cache.blocks_per_segment,
                                      k_scale=kw.get("k_scale", k_scale),
                                      v_scale=kw.get("v_scale", v_scale))


@pytest.mark.parametrize("kind", ["decode", "prefill"])
def test_fp8_scales_reach_the_kernel_on_the_direct_path(monkeypatch, make_cache, kind):
    """The fp8 cache and its scale tensors are launch arguments: a direct launch passes this
    call's scales (a captured graph reads whatever they hold), a bf16 cache or a per-tensor
    scale (stride 0, not 1) is another specialisation, and the plan's KV_FP8 goes with it."""
    import kernels.paged_decode as decode_module
    import kernels.paged_prefill as prefill_module

    real = (decode_module._decode_split_kernel if kind == "decode"
            else prefill_module._prefill_kernel)
    kernel = RecordingKernel(real)
    monkeypatch.setattr(decode_module, "_decode_split_kernel", kernel)
    monkeypatch.setattr(prefill_module, "_prefill_kernel", kernel)
    monkeypatch.setattr(decode_module, "_LAUNCHES", {})
    prefill_module.plan_prefill.cache_clear()  # its plans hold their DirectLaunch
    try:
        cache = make_cache(context_lens=[5, 20], num_kv_heads=2, head_dim=16, block_size=16,
                           blocks_per_segment=4, num_segments=2, dtype=torch.bfloat16, seed=0,
                           device="cpu")
        k8, v8, k_scale, v_scale = cache.quantized(per_head=True)
        q = torch.randn(2 if kind == "decode" else 3, 4, 16, dtype=torch.bfloat16)
        call = _fp8_calls(kind, cache, q, k_scale, v_scale, k8, v8)
        call()
        k2, v2 = k_scale * 2, v_scale * 2
        call(k_scale=k2, v_scale=v2)
        call(k_scale=k_scale[:1].clone(), v_scale=v_scale[:1].clone())
        call(k=cache.k_segments, v=cache.v_segments, k_scale=None, v_scale=None)
    finally:
        prefill_module.plan_prefill.cache_clear()
    jit, direct = kernel.launches()
    assert len(jit) == 3 and len(direct) == 1
    assert direct[0]["K_scale"] == k2.data_ptr() and direct[0]["V_scale"] == v2.data_ptr()
    assert direct[0]["stride_ks"] == 1 and direct[0]["KV_FP8"]
    assert jit[0]["K_scale"] is k_scale and jit[0]["K_base"].dtype == torch.float8_e4m3fn
    assert jit[1]["stride_ks"] == jit[1]["stride_vs"] == 0 and jit[1]["KV_FP8"]
    assert jit[2]["K_base"].dtype == torch.bfloat16 and not jit[2]["KV_FP8"]
