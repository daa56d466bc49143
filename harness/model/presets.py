"""Model shapes and GPU figures: the presets a run config names.

Model shapes are copied from each model card's config.json (Hugging Face), context length
(max_model_len) from its max_position_embeddings; parameter counts are computed from the shape
so that weights bytes and FLOPs follow from one definition. GPU figures
come from NVIDIA's datasheets; memory is what the driver reports as total (nvidia-smi), which is
what an engine such as vLLM multiplies by gpu_memory_utilization.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
MIB = 1 << 20


class PresetError(ValueError):
    """An unknown model or GPU preset name."""


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a Llama-style decoder (GQA attention, SwiGLU MLP)."""

    name: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: int
    num_params: int
    # The longest sequence (prompt + output) the model serves; None: no limit (toy shapes).
    # A serving engine rejects longer requests, and a preallocating one reserves this much.
    max_model_len: int | None = None
    # Sliding-window attention in every layer: the query at position p attends keys
    # p - sliding_window + 1 .. p (transformers' and vLLM's reading of the config field).
    # None: full attention.
    sliding_window: int | None = None


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator: memory, HBM bandwidth, dense BF16 tensor rate, host and peer links."""

    name: str
    memory_bytes: int
    bandwidth_bytes_s: float
    bf16_flops: float
    pcie_bytes_s: float = 64e9  # one direction of PCIe Gen5 x16 (swap traffic)
    nvlink_bytes_s: float = 450e9  # one direction of NVLink 4 (tensor-parallel all-reduce)


def count_params(
    *,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    hidden_size: int,
    intermediate_size: int,
    vocab_size: int,
    tied_embeddings: bool,
    qkv_bias: bool = False,
) -> int:
    """Parameters of a Llama-style decoder: embeddings, attention, SwiGLU MLP, RMSNorms, head."""
    q = num_heads * head_dim
    kv = num_kv_heads * head_dim
    attention = hidden_size * (q + 2 * kv) + q * hidden_size + (q + 2 * kv if qkv_bias else 0)
    mlp = 3 * hidden_size * intermediate_size
    per_layer = attention + mlp + 2 * hidden_size
    embeddings = vocab_size * hidden_size * (1 if tied_embeddings else 2)
    return num_layers * per_layer + embeddings + hidden_size


def _model(name: str, *, context: int | None, dtype_bytes: int = 2, tied: bool = False,
           qkv_bias: bool = False, sliding_window: int | None = None, **shape):
    params = count_params(tied_embeddings=tied, qkv_bias=qkv_bias, **shape)
    return ModelSpec(name=name, dtype_bytes=dtype_bytes, num_params=params,
                     max_model_len=context, sliding_window=sliding_window, **shape)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # A toy shape for tests and CPU runs of the GPU executor (not a real model).
        _model("tiny", num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, hidden_size=64,
               intermediate_size=128, vocab_size=256, context=None),
        # meta-llama/Llama-3.2-1B config.json: 16 layers, 32 heads, 8 KV heads, head_dim 64,
        # hidden 2048, intermediate 8192, vocab 128256, tie_word_embeddings true (1.24B params),
        # max_position_embeddings 131072.
        _model("llama3.2-1b", num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
               hidden_size=2048, intermediate_size=8192, vocab_size=128256, tied=True,
               context=131072),
        # meta-llama/Meta-Llama-3-8B config.json: 32 layers, 32 heads, 8 KV heads, hidden 4096
        # (head_dim 128), intermediate 14336, vocab 128256, untied head (8.03B params),
        # max_position_embeddings 8192.
        _model("llama3-8b", num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
               hidden_size=4096, intermediate_size=14336, vocab_size=128256, context=8192),
        # meta-llama/Llama-3.1-8B config.json: the shape of Llama-3-8B with llama3 rope scaling
        # (factor 8, original 8192) and max_position_embeddings 131072.
        _model("llama3.1-8b", num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
               hidden_size=4096, intermediate_size=14336, vocab_size=128256, context=131072),
        # meta-llama/Meta-Llama-3-70B config.json: 80 layers, 64 heads, 8 KV heads, hidden 8192
        # (head_dim 128), intermediate 28672, vocab 128256 (70.6B params),
        # max_position_embeddings 8192.
        _model("llama3-70b", num_layers=80, num_heads=64, num_kv_heads=8, head_dim=128,
               hidden_size=8192, intermediate_size=28672, vocab_size=128256, context=8192),
        # meta-llama/Llama-3.1-70B config.json: the shape of Llama-3-70B, max_position_embeddings
        # 131072. Its 141 GB of bf16 weights need tensor parallelism: run it with tp 4 or 8
        # (8 KV heads split 2 or 1 per GPU).
        _model("llama3.1-70b", num_layers=80, num_heads=64, num_kv_heads=8, head_dim=128,
               hidden_size=8192, intermediate_size=28672, vocab_size=128256, context=131072),
        # mistralai/Mistral-7B-v0.1 config.json: 32 layers, 32 heads, 8 KV heads, hidden 4096
        # (head_dim 128), intermediate 14336, vocab 32000, untied head (7.24B params),
        # max_position_embeddings 32768, sliding_window 4096 (in every layer).
        _model("mistral-7b", num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
               hidden_size=4096, intermediate_size=14336, vocab_size=32000, context=32768,
               sliding_window=4096),
        # Qwen/Qwen2.5-7B config.json: 28 layers, 28 heads, 4 KV heads, hidden 3584 (head_dim
        # 128), intermediate 18944, vocab 152064, q/k/v biases, untied head (7.61B params),
        # max_position_embeddings 131072.
        _model("qwen2.5-7b", num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
               hidden_size=3584, intermediate_size=18944, vocab_size=152064, qkv_bias=True,
               context=131072),
        # Qwen/Qwen2.5-7B-Instruct-1M config.json: the Qwen2.5-7B shape (28 layers, 28 heads,
        # 4 KV heads, hidden 3584, intermediate 18944, vocab 152064, q/k/v biases, untied head),
        # max_position_embeddings 1010000, rope_theta 1e7; full attention in every layer
        # (use_sliding_window false; dual chunk attention of 262144-token chunks reaches 1M).
        _model("qwen2.5-7b-1m", num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
               hidden_size=3584, intermediate_size=18944, vocab_size=152064, qkv_bias=True,
               context=1010000),
    )
}

GPUS: dict[str, GpuSpec] = {
    spec.name: spec
    for spec in (
        # H100 SXM5 datasheet: 80GB HBM3 (nvidia-smi total 81,559 MiB), 3.35 TB/s, BF16 dense
        # 989 TFLOPS (1,979 with sparsity), PCIe Gen5 128 GB/s both ways, NVLink 900 GB/s both ways.
        GpuSpec("h100-80gb", 81559 * MIB, 3.35e12, 989e12, pcie_bytes_s=64e9,
                nvlink_bytes_s=450e9),
        # H200 SXM datasheet: 141GB HBM3e (nvidia-smi total 143,771 MiB), 4.8 TB/s, BF16 dense
        # 989 TFLOPS, PCIe Gen5, NVLink 900 GB/s both ways.
        GpuSpec("h200-141gb", 143771 * MIB, 4.8e12, 989e12, pcie_bytes_s=64e9,
                nvlink_bytes_s=450e9),
        # A100 SXM4 80GB datasheet: HBM2e 2,039 GB/s (nvidia-smi total 81,920 MiB), BF16 dense
        # 312 TFLOPS (624 with sparsity), PCIe Gen4 64 GB/s both ways, NVLink 600 GB/s both ways.
        GpuSpec("a100-80gb", 81920 * MIB, 2.039e12, 312e12, pcie_bytes_s=32e9,
                nvlink_bytes_s=300e9),
    )
}


def model_preset(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise PresetError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def gpu_preset(name: str) -> GpuSpec:
    try:
        return GPUS[name]
    except KeyError:
        raise PresetError(f"unknown GPU {name!r}; choose one of {', '.join(GPUS)}") from None
