"""The KV budget, computed the way serving engines compute it, defined once for every module.

vLLM sizes its KV cache after a profile run: total memory x gpu_memory_utilization, minus the
weights, minus the peak activations of one forward pass of max_num_batched_tokens tokens (and
memory outside PyTorch), divided by the bytes one token's K and V take on one GPU. The KV
cache's element type is the run's (config.kv_dtype): fp8 takes one byte per element, so the same
memory holds twice the tokens, less the few bytes of its scales.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.model.config import KV_DTYPES, RunConfig
from harness.model.presets import GIB, MIB, ModelSpec
from reports.schema import DEFAULT_KV_DTYPE

# Memory outside PyTorch's allocator: CUDA context, cuBLAS and NCCL workspaces. vLLM logs a few
# hundred MiB of "non_torch memory" on H100; half a GiB keeps the estimate on the safe side.
NON_TORCH_BYTES = 512 * MIB
# Sampling keeps float32 logits for one token per sequence.
LOGITS_DTYPE_BYTES = 4
SCALE_BYTES = 4  # float32


class BudgetError(ValueError):
    """The weights and activations leave no room for a KV cache."""


@dataclass(frozen=True)
class KvBudget:
    """Per-GPU memory split: what the KV cache gets, in bytes and in slots (tokens)."""

    bytes_per_token: int
    weight_bytes: int
    activation_bytes: int
    kv_bytes: int
    slots: int
    scale_bytes: int = 0  # a scaled (fp8) cache's scales, outside kv_bytes


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads are split across tensor-parallel ranks, and replicated when tp > num_kv_heads."""
    if model.num_heads % tp:
        raise BudgetError(f"tp {tp} must divide num_heads {model.num_heads} of {model.name}")
    kv = model.num_kv_heads
    if tp <= kv:
        if kv % tp:
            raise BudgetError(f"tp {tp} must divide num_kv_heads {kv} of {model.name}")
        return kv // tp
    if tp % kv:
        raise BudgetError(f"tp {tp} must be a multiple of num_kv_heads {kv} of {model.name}")
    return 1


def bytes_per_token(model: ModelSpec, tp: int = 1, kv_dtype: str = DEFAULT_KV_DTYPE) -> int:
    """K and V of one token in every layer, on one GPU, in elements of kv_dtype."""
    return (2 * model.num_layers * kv_heads_per_gpu(model, tp) * model.head_dim
            * KV_DTYPES[kv_dtype].element_bytes)


def scale_bytes(model: ModelSpec, tp: int = 1, kv_dtype: str = DEFAULT_KV_DTYPE) -> int:
    """What a scaled cache's scales take on one GPU (nothing for another dtype): per layer, one
    scale per KV head for K and for V, whatever the number of tokens."""
    if not KV_DTYPES[kv_dtype].scaled:
        return 0
    return 2 * model.num_layers * kv_heads_per_gpu(model, tp) * SCALE_BYTES


def weight_bytes(model: ModelSpec, tp: int = 1) -> int:
    """Weights on one GPU (every matrix, embeddings included, is sharded tp ways)."""
    return model.num_params * model.dtype_bytes // tp


def activation_bytes(config: RunConfig) -> int:
    """Peak memory of the profile forward pass, plus memory outside PyTorch.

    The largest live set of a Llama layer is in the MLP: the residual stream and the normed input
    (2 x hidden), the fused gate/up output (2 x intermediate / tp) and the activated product
    (intermediate / tp), for every token of a max_num_batched_tokens batch, plus the logits.
    """
    model, sched = config.model, config.scheduler
    tokens = sched.max_num_batched_tokens
    mlp = 3 * model.intermediate_size // config.tp
    per_token = model.dtype_bytes * (2 * model.hidden_size + mlp)
    logits = min(sched.max_num_seqs, tokens) * model.vocab_size * LOGITS_DTYPE_BYTES
    return tokens * per_token + logits + NON_TORCH_BYTES


def kv_budget(config: RunConfig) -> KvBudget:
    """The KV budget of a run; budget_slots_override replaces the memory arithmetic."""
    bpt = bytes_per_token(config.model, config.tp, config.kv_dtype)
    weights = weight_bytes(config.model, config.tp)
    activations = activation_bytes(config)
    scales = scale_bytes(config.model, config.tp, config.kv_dtype)
    if config.budget_slots_override is not None:
        slots = config.budget_slots_override
        return KvBudget(bpt, weights, activations, slots * bpt, slots, scales)
    usable = int(config.gpu.memory_bytes * config.gpu_memory_utilization)
    kv = usable - weights - activations - scales
    if kv < bpt:
        raise BudgetError(
            f"{config.model.name} on {config.gpu.name} x tp {config.tp}: "
            f"{usable / GIB:.1f} GiB usable ({config.gpu_memory_utilization:.0%} of "
            f"{config.gpu.memory_bytes / GIB:.1f} GiB) - {weights / GIB:.1f} GiB weights - "
            f"{activations / GIB:.1f} GiB activations leaves no KV cache; raise tp or "
            f"gpu_memory_utilization, or use a larger GPU"
        )
    return KvBudget(bpt, weights, activations, kv, kv // bpt, scales)
