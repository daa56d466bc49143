"""FP8 KV in the GPU executor: the float8 pool moves bytes and keeps per-layer scales, the
scales are calibrated from a calibration batch, and the engine runs on an fp8 pool through the
reference and the Triton paths (the Triton interpreter on a CPU) with the same tokens."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from allocators import make_allocator  # noqa: E402
from harness.engine.executor import KVGeometry  # noqa: E402
from harness.gpu.calibration import calibrate_kv_scales  # noqa: E402
from harness.gpu.executor import build_decoder  # noqa: E402
from harness.gpu.kv_pool import KVPool  # noqa: E402
from harness.gpu.run import run_on_device  # noqa: E402
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from kernels.fp8 import FP8_DTYPE, FP8_MAX  # noqa: E402
from kernels.segments import token_values  # noqa: E402

LAYERS, HEADS, DIM = 2, 2, 8


def _fp8_pool(alloc):
    pool = KVPool(KVGeometry(alloc.block_size, alloc.blocks_per_segment, alloc.usage().budget),
                  num_layers=LAYERS, num_kv_heads=HEADS, head_dim=DIM, dtype=FP8_DTYPE,
                  device="cpu")
    pool.sync(list(alloc.segments()), [])
    return pool


def test_an_fp8_pool_copies_bytes_between_slots_of_any_segments():
    alloc = make_allocator("hybrid", 128, block_size=4, segment_tokens=32)
    for sid in range(3):
        alloc.allocate(sid, 30)
    pool = _fp8_pool(alloc)
    assert pool.allocated_bytes == len(alloc.segments()) * LAYERS * 2 * 32 * HEADS * DIM
    gen = torch.Generator().manual_seed(0)
    slots = np.arange(90)  # across three segments
    data = (torch.randn(LAYERS, 2, 90, HEADS, DIM, generator=gen) * 100).to(FP8_DTYPE)
    pool.write_slots(pool.index(slots), data)
    back = pool.read_slots(pool.index(slots))
    assert back.dtype == FP8_DTYPE
    assert torch.equal(back.view(torch.uint8), data.view(torch.uint8))


def test_an_fp8_pools_slot_copies_follow_the_kernels_value_layout():
    """Slots written through the pool land where the kernels read them: K token-major, V
    transposed in runs of 16 tokens (kernels/segments.py), here two runs a block."""
    alloc = make_allocator("paged", 256, block_size=32)
    pool = _fp8_pool(alloc)
    gen = torch.Generator().manual_seed(1)
    slots = np.arange(256)[::-1].copy()  # every slot, in another order than stored
    data = (torch.randn(LAYERS, 2, 256, HEADS, DIM, generator=gen) * 100).to(FP8_DTYPE)
    pool.write_slots(pool.index(slots), data)
    cache = pool.layer(1)
    seg = pool.live_segments()[0]
    assert cache.v_segments[seg].shape == (pool.blocks_per_segment, 2, HEADS, DIM, 16)
    order = torch.from_numpy(np.argsort(slots))
    keys = cache.k_segments[seg].view(torch.uint8).reshape(-1, HEADS, DIM)
    values = token_values(cache.v_segments[seg]).view(torch.uint8).reshape(-1, HEADS, DIM)
    assert torch.equal(keys, data[1, 0, order].view(torch.uint8))
    assert torch.equal(values, data[1, 1, order].view(torch.uint8))


def test_fp8_scales_are_per_layer_and_head_and_overwritten_in_place():
    alloc = make_allocator("paged", 64, block_size=4)
    pool = _fp8_pool(alloc)
    scale_k = pool.layer(1).k_scale
    assert scale_k.shape == (HEADS,) and scale_k.dtype == torch.float32
    k = torch.arange(1, LAYERS * HEADS + 1, dtype=torch.float32).reshape(LAYERS, HEADS)
    pool.set_scales(k, 2 * k)
    # The very tensors the layers (and a captured graph) hold now read the new values.
    assert pool.layer(1).k_scale is not None and scale_k.tolist() == [3.0, 4.0]
    assert pool.layer(0).v_scale.tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="shape"):
        pool.set_scales(k[:1], k[:1])
    plain = KVPool(KVGeometry(4, 16, 64), num_layers=LAYERS, num_kv_heads=HEADS, head_dim=DIM,
                   dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="no scales"):
        plain.set_scales(k, k)


def test_reference_backend_quantizes_what_it_writes(tiny_decoder):
    from harness.gpu.attention import ReferenceAttention

    alloc = make_allocator("paged", 64, block_size=4)
    alloc.allocate(0, 8)
    pool = _fp8_pool(alloc)
    scales = torch.full((LAYERS, HEADS), 0.5)
    pool.set_scales(scales, scales)
    k = torch.tensor([1.0, -3.0, 300.0, 0.1]).repeat(8, HEADS, 2)
    ReferenceAttention().write(pool, 1, k, -k, pool.index(np.arange(8)))
    stored = pool.read_slots(pool.index(np.arange(8)))[1].float()
    assert stored[0, 0, 0, :4].tolist() == [2.0, -6.0, FP8_MAX, 0.203125]
    assert torch.equal(stored[1], -stored[0])


def test_calibration_gives_every_layer_and_head_a_positive_scale_from_its_seed(tiny_decoder):
    k, v = calibrate_kv_scales(tiny_decoder, seed=0, prompts=2, tokens=32)
    shape = (tiny_decoder.config.num_layers, tiny_decoder.num_kv_heads)
    assert k.shape == v.shape == shape and k.dtype == torch.float32
    assert bool((k > 0).all() and (v > 0).all())
    again = calibrate_kv_scales(tiny_decoder, seed=0, prompts=2, tokens=32)
    assert torch.equal(again[0], k) and torch.equal(again[1], v)
    assert not torch.equal(calibrate_kv_scales(tiny_decoder, seed=1, prompts=2, tokens=32)[0], k)
    with pytest.raises(ValueError, match="multiple of 16"):
        calibrate_kv_scales(tiny_decoder, seed=0, tokens=20)


def _run(decoder, trace, *, kv_dtype, budget, preemption="recompute", allocator="paged"):
    config = RunConfig(
        model=model_preset("tiny"), allocator=AllocatorConfig.of(allocator, block_size=4),
        scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=48,
                                  preemption=preemption),
        budget_slots_override=budget, kv_dtype=kv_dtype,
    )
    result, executor = run_on_device(config, trace, decoder)
    return result, executor


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_fp8_runs_under_preemption_give_the_tokens_of_a_run_without(tiny_decoder, small_trace,
                                                                    preemption):
    """Swapped-out, copied (forks) and recomputed KV come back as the same fp8 values."""
    trace = small_trace(1, 8, n=[1, 1, 3, 1, 1, 2, 1, 1], max_prompt=50, max_output=24)
    roomy, roomy_exec = _run(tiny_decoder, trace, kv_dtype="fp8", budget=4096)
    tight, tight_exec = _run(tiny_decoder, trace, kv_dtype="fp8", budget=100,
                             preemption=preemption)
    assert roomy_exec.details["kv_dtype"] == "float8_e4m3fn"
    # Calibrated once, from the calibration batch of the run's seed.
    calibrated = calibrate_kv_scales(tiny_decoder, seed=0)
    assert torch.equal(roomy_exec.pool.scales, torch.stack(calibrated))
    assert tight.summary["preemptions"] > 0
    assert tight.summary["completed"] == roomy.summary["completed"] == len(trace)
    assert tight_exec.outputs() == roomy_exec.outputs()


def test_fp8_kv_through_the_triton_kernels_gives_the_reference_tokens(tiny_decoder,
                                                                      small_trace):
    """write_kv quantizes as the reference does, and the prefill and decode kernels read the
    same values: the eager GPU path, in the Triton interpreter on a CPU."""
    from harness.gpu.attention import ReferenceAttention, TritonAttention
    from harness.gpu.model import Decoder

    trace = small_trace(4, 3, max_prompt=20, max_output=6)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = build_decoder(model_preset("tiny"), device=device, dtype="float32").weights
    outputs = []
    for backend in (ReferenceAttention, TritonAttention):
        decoder = Decoder(tiny_decoder.config, weights, backend())
        _, executor = _run(decoder, trace, kv_dtype="fp8", budget=100)
        outputs.append(executor.outputs())
    assert outputs[0] == outputs[1]


GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _prefix_share(a: dict, b: dict) -> float:
    """Tokens of b's outputs before each sequence first differs from a's, over all tokens."""
    same = total = 0
    for sid, tokens in b.items():
        other = a[sid]
        first = next((i for i, (x, y) in enumerate(zip(tokens, other)) if x != y),
                     min(len(tokens), len(other)))
        same, total = same + first, total + len(tokens)
    return same / max(total, 1)


@GPU_ONLY
def test_fp8_cuda_graph_steps_give_the_eager_tokens(small_trace):
    """Decode-only and mixed steps replayed from CUDA graphs read the pool's calibrated scales.
    Graphs pad the batch, and the decode kernel's split count follows the padded row count,
    so float32 values may differ in their last bits and round to another e4m3 value now and
    then: the tokens must agree, not to the last one. How far they agree depends on how the
    steps are padded (which GEMM kernels run): on an H200, 0.889 of the tokens once mixed
    steps padded their decode rows after the prefill rows (harness.gpu.mixed_graphs
    .padded_sizes), at least 0.9 before; the same with the prefill launch on its own stream
    or not."""
    from harness.engine.loop import simulate
    from harness.gpu.executor import GpuExecutor

    torch.backends.cuda.matmul.allow_tf32 = False
    decoder = build_decoder(model_preset("llama3.2-1b"), device="cuda", dtype="float32", seed=0)
    trace = small_trace(3, 12, max_prompt=300, max_output=40)
    config = RunConfig(model=model_preset("llama3.2-1b"),
                       allocator=AllocatorConfig.of("paged", block_size=16),
                       scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256),
                       budget_slots_override=4096, kv_dtype="fp8")
    runs = {}
    for graphs in (True, False):
        made = []

        def factory(cfg, geometry, graphs=graphs):
            made.append(GpuExecutor(cfg, geometry, decoder=decoder, trace=trace,
                                    cuda_graphs=graphs))
            return made[0]

        result = simulate(config, trace, executor_factory=factory)
        assert result.summary["completed"] == len(trace)
        runs[graphs] = made[0]
    assert runs[True].details["cuda_graph_steps"] > 0
    assert runs[False].details["cuda_graph_steps"] == 0
    assert _prefix_share(runs[False].outputs(), runs[True].outputs()) >= 0.85


@GPU_ONLY
def test_fp8_decode_of_a_head_dim_128_model_runs_the_gluon_kernel_and_keeps_the_tokens(
        small_trace):
    """End to end through kernels/fp8_decode.py: a llama3-8b-shaped model (head_dim 128, 4
    query heads a KV head; two layers and a small vocabulary, so that float32 weights stay
    small) decodes an fp8 pool with the Gluon kernel, and its greedy tokens follow those of the
    reference backend over the same pool. The kernel rounds queries and weights to float16
    where the reference computes in float32, so tokens agree up to a rare near-tie: at least
    0.9 of them before each sequence first parts."""
    import dataclasses

    from harness.gpu.attention import ReferenceAttention, TritonAttention
    from harness.gpu.model import Decoder, DecoderConfig
    from kernels import fp8_decode

    torch.backends.cuda.matmul.allow_tf32 = False
    model = dataclasses.replace(model_preset("llama3-8b"), num_layers=2,
                                intermediate_size=1024, vocab_size=2048)
    weights = build_decoder(model, device="cuda", dtype="float32", seed=0).weights
    trace = small_trace(5, 12, max_prompt=300, max_output=40)
    config = RunConfig(model=model, allocator=AllocatorConfig.of("paged", block_size=16),
                       scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256),
                       budget_slots_override=4096, kv_dtype="fp8")
    outputs = []
    for backend in (ReferenceAttention(), TritonAttention(decode_balance="off")):
        fp8_decode._LAUNCHES.clear()
        decoder = Decoder(DecoderConfig.from_model_spec(model), weights, backend)
        result, executor = run_on_device(config, trace, decoder)
        assert result.summary["completed"] == len(trace)
        outputs.append(executor.outputs())
    assert fp8_decode._LAUNCHES, "the fp8 decode steps did not run the Gluon kernel"
    assert _prefix_share(outputs[0], outputs[1]) >= 0.9
