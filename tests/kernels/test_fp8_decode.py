"""kernels/fp8_decode.py: which inputs take the Gluon fp8 decode kernel, that it compiles for
Hopper with the installed Triton, and (on a GPU) that paged_decode through it computes attention
over exactly the dequantized cache."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kernels import fp8_decode
from kernels.fp8 import FP8_DTYPE
from kernels.paged_decode import launch_key, paged_decode
from kernels.reference import reference_decode
from kernels.segments import segment_table

ROOT = Path(__file__).resolve().parents[2]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the Gluon kernel needs CUDA")


def _inputs(device="cuda", heads=32, kv_heads=8, head_dim=128, block_size=16, dtype=FP8_DTYPE):
    q = SimpleNamespace(device=torch.device(device), shape=(2, heads, head_dim))
    table = SimpleNamespace(dtype=dtype, block_size=block_size, head_dim=head_dim,
                            num_kv_heads=kv_heads)
    return q, table


@pytest.mark.parametrize("change, taken", [
    ({}, True), ({"block_size": 64}, True), ({"heads": 64}, True), ({"heads": 8}, True),
    ({"device": "cpu"}, False), ({"dtype": torch.bfloat16}, False),
    ({"block_size": 1}, False), ({"block_size": 8}, False), ({"block_size": 24}, False),
    ({"head_dim": 64}, False), ({"heads": 128}, False)])
def test_supported_inputs(monkeypatch, change, taken):
    """An fp8 cache on a capable GPU, blocks of whole runs of V, head_dim 128, at most 8 query
    heads a KV head; everything else stays on the Triton kernel."""
    monkeypatch.setattr(fp8_decode, "_capable", lambda device: True)
    q, table = _inputs(**change)
    assert fp8_decode.supported(q, table, None) is taken


def test_window_and_old_gpus_stay_on_the_triton_kernel(monkeypatch):
    q, table = _inputs()
    monkeypatch.setattr(fp8_decode, "_capable", lambda device: True)
    assert not fp8_decode.supported(q, table, 4096)
    monkeypatch.setattr(fp8_decode, "_capable", lambda device: False)
    assert not fp8_decode.supported(q, table, None)


def test_a_launch_is_keyed_by_everything_its_checks_read():
    """Both decode kernels cache their launches by paged_decode.launch_key: a call whose context
    lengths or block tables have another dtype, or whose blocks_per_segment disagrees with the
    table, gets another key, and so is checked again rather than launched unchecked."""
    table = SimpleNamespace(dtype=FP8_DTYPE, num_kv_heads=8, head_dim=128, block_size=16,
                            blocks_per_segment=64, k_base=torch.empty(1, dtype=FP8_DTYPE))
    q = torch.empty(2, 32, 128)
    tables = torch.zeros(2, 4, dtype=torch.int32)
    lens = torch.zeros(2, dtype=torch.int32)
    key = launch_key(q, table, tables, lens, 64, None, None, None)
    assert key == launch_key(q, table, tables.clone(), lens.clone(), 64, None, None, None)
    assert key != launch_key(q, table, tables, lens.long(), 64, None, None, None)
    assert key != launch_key(q, table, tables.long(), lens, 64, None, None, None)
    assert key != launch_key(q, table, tables, lens, 32, None, None, None)


_COMPILE = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from kernels import fp8_decode

kernel = fp8_decode._fp8_decode_kernel
names = kernel.arg_names
constexprs = dict(GROUP=4, NUM_KV_HEADS=8, BLOCK_SIZE=int(sys.argv[1]), BLOCKS_PER_SEGMENT=256,
                  ALIGN=16, SPLIT=sys.argv[2] == "1", STAGES=fp8_decode.STAGES)
pointers = dict(Q="*bf16", K_base="*fp8e4nv", V_base="*fp8e4nv", K_offsets="*i64",
                V_offsets="*i64", K_scale="*fp32", V_scale="*fp32", Block_tables="*i32",
                Context_lens="*i32", Out="*bf16", Part_out="*fp32", Part_lse="*fp32")
signature = {n: "constexpr" if n in constexprs else
             pointers.get(n, "fp32" if n == "qk_scale" else "i32") for n in names}
source = GluonASTSource(kernel, signature,
                        constexprs={(names.index(k),): v for k, v in constexprs.items()},
                        attrs={(i,): [["tt.divisibility", 16]]
                               for i, n in enumerate(names) if n in pointers})
compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=fp8_decode.WARPS,
                                       maxnreg=fp8_decode.MAX_REGISTERS))
ptx = compiled.asm["ptx"]
print(compiled.metadata.shared, "mma.sync" in ptx, "cp.async" in ptx,
      f".maxnreg {fp8_decode.MAX_REGISTERS}" in ptx)
"""


@pytest.mark.parametrize("block_size, split", [(16, False), (64, True)])
def test_compiles_for_hopper(block_size, split):
    """The kernel compiles for sm_90 with the installed Triton, no GPU needed (in a process of
    its own: the test session runs Triton's interpreter, which compiles no Gluon): the Gluon
    API it calls exists there, it multiplies on the tensor cores from cp.async-filled shared
    memory, and its buffers and its registers (capped) fit an SM four times over."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", _COMPILE, str(block_size), str(int(split))],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    shared, mma, cp_async, capped = run.stdout.split()
    assert mma == "True" and cp_async == "True" and capped == "True"
    assert 4 * (int(shared) + 1024) <= 228 * 1024
    assert 4 * 32 * fp8_decode.WARPS * fp8_decode.MAX_REGISTERS <= 65536


def _fp8_case(make_cache, context_lens, heads, kv_heads, block_size, dtype, seed):
    cache = make_cache(context_lens=context_lens, num_kv_heads=kv_heads, head_dim=128,
                       block_size=block_size, blocks_per_segment=6144 // block_size,
                       num_segments=3, dtype=torch.bfloat16, seed=seed)
    cache.scale_heads([1.0 + h for h in range(kv_heads)], [1.0 + 3 * h for h in range(kv_heads)])
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(len(context_lens), heads, 128, generator=gen).to(device="cuda", dtype=dtype)
    return cache, q


@cuda
@pytest.mark.parametrize("num_splits", [None, 1, 3, 8])
@pytest.mark.parametrize("heads, kv_heads, block_size", [(32, 8, 16), (8, 8, 64), (16, 2, 32)])
@pytest.mark.parametrize("per_head", [True, False])
def test_gluon_path_matches_dequantized_reference(monkeypatch, make_cache, rel_err, num_splits,
                                                  heads, kv_heads, block_size, per_head):
    """Ragged contexts (empty, shorter than a tile, one past a tile, whole groups of STAGES
    (3) tiles, one or two tiles and a tail past them, many tiles) over blocks in three
    segments: paged_decode takes the Gluon kernel, which gives attention over exactly the
    dequantized values, in q's dtype."""
    lens = [0, 1, 17, 64, 65, 192, 321, 1000, 4096 + 5]
    cache, q = _fp8_case(make_cache, lens, heads, kv_heads, block_size, torch.bfloat16,
                         seed=block_size + heads)
    k8, v8, k_scale, v_scale = cache.quantized(per_head)
    taken = []
    launch_for = fp8_decode.launch_for
    monkeypatch.setattr(fp8_decode, "launch_for",
                        lambda *args: taken.append(args[4]) or launch_for(*args))
    out = paged_decode(q, k8, v8, cache.block_tables, cache.context_lens,
                       cache.blocks_per_segment, num_splits=num_splits, k_scale=k_scale,
                       v_scale=v_scale)
    assert taken == [num_splits]
    ref = reference_decode(q.double(), k8, v8, cache.block_tables, cache.context_lens,
                           cache.blocks_per_segment, compute_dtype=torch.float64,
                           k_scale=k_scale, v_scale=v_scale)
    assert out.dtype == torch.bfloat16
    assert out[0].abs().max().item() == 0.0
    assert rel_err(out, ref) < 1e-2


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_gluon_path_takes_float16_and_float32_queries(make_cache, rel_err, dtype):
    cache, q = _fp8_case(make_cache, [300, 2048], 32, 8, 16, dtype, seed=3)
    k8, v8, k_scale, v_scale = cache.quantized(True)
    out = paged_decode(q, k8, v8, cache.block_tables, cache.context_lens,
                       cache.blocks_per_segment, k_scale=k_scale, v_scale=v_scale)
    ref = reference_decode(q.double(), k8, v8, cache.block_tables, cache.context_lens,
                           cache.blocks_per_segment, compute_dtype=torch.float64,
                           k_scale=k_scale, v_scale=v_scale)
    assert out.dtype == dtype
    assert rel_err(out, ref) < 1e-2


@cuda
def test_gluon_path_replays_in_a_cuda_graph(make_cache, rel_err):
    """Captured once, the launch decodes whatever context lengths the tensor holds at replay
    (the split count never reads them on the host)."""
    cache, q = _fp8_case(make_cache, [4096, 4096], 32, 8, 16, torch.bfloat16, seed=5)
    k8, v8, k_scale, v_scale = cache.quantized(True)
    table = segment_table(k8, v8)
    lens = torch.tensor([100, 3000], dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)

    def decode():
        paged_decode(q, None, None, cache.block_tables, lens, cache.blocks_per_segment,
                     table=table, k_scale=k_scale, v_scale=v_scale, out=out)

    decode()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        decode()
    lens.copy_(torch.tensor([4096, 7], dtype=torch.int32))
    graph.replay()
    ref = reference_decode(q.double(), k8, v8, cache.block_tables, lens,
                           cache.blocks_per_segment, compute_dtype=torch.float64,
                           k_scale=k_scale, v_scale=v_scale)
    assert rel_err(out, ref) < 1e-2
