"""Roofline step time: weights and KV bytes over HBM bandwidth, FLOPs over the tensor rate.

A step reads every weight once and the KV of every scheduled sequence's context; it computes
2 x params FLOPs per token plus attention (4 x layers x heads x head_dim per query-key pair). The
step takes max(memory time, compute time) plus a fixed overhead, plus tensor-parallel all-reduces
and PCIe traffic (swaps, and the prefix cache's host tier: evicted blocks copied out, host hits
copied back), which do not overlap with the forward pass: the GPU executor makes these copies on
the compute stream before the forward, so a step waits for them. An engine that copies evicted
blocks out on a side stream (vLLM's CPU offloading, LMCache) hides that direction behind compute:
for it the device-to-host part of this price is an upper bound. The all-reduce term is
fitted from a measured sweep where one exists for the GPU (harness.model.allreduce), else taken
from the datasheet's NVLink bandwidth and a guessed latency. The decode attention
kernel's efficiency per block size comes from measured kernel benchmarks when they exist.

A KV cache of another element type (config.kv_dtype, fp8) reads its own bytes per token, at the
bandwidth its kernel was measured to reach relative to the bf16 kernel's
(decode_bandwidth_ratio): fp8 halves the bytes, but its decode loop does not stream them twice
as fast.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.model.allreduce import AllReduceFit
from harness.model.budget import bytes_per_token, weight_bytes
from harness.model.config import KV_DTYPES, RunConfig
from reports.schema import DEFAULT_KV_DTYPE, read_measurement
from reports.schema import results_dir as measured_results_dir

# Fraction of datasheet HBM bandwidth that streaming kernels reach (GEMV-bound decode: vLLM's
# batch-1 Llama-3-8B decode on H100 runs at ~150 tokens/s, about 80% of the 3.35 TB/s roofline).
MEMORY_EFFICIENCY = 0.8
# Fraction of dense BF16 peak that serving GEMMs reach (prefill MFU of well-tuned engines).
COMPUTE_EFFICIENCY = 0.6
# Per step, outside the forward pass: scheduling, input preparation, sampling, launches with CUDA
# graphs.
STEP_OVERHEAD_S = 0.5e-3
# Latency of one NVLink all-reduce of a small message, a guess used when no measured sweep
# exists; a Llama layer does two under tensor parallelism (after attention and after the MLP).
ALLREDUCE_LATENCY_S = 10e-6
# benchmarks/bench_paged_decode.py writes paged_decode_<gpu>.csv (the kernel against SDPA);
# benchmarks/bench_paged_decode_fp8.py writes paged_decode_fp8_<gpu>.csv (fp8 and bf16 rows).
KERNEL_TABLE_PREFIX = "paged_decode_"


@dataclass(frozen=True)
class CostModel:
    """Per-GPU constants of one run; step_s() prices one engine step."""

    weight_bytes: float
    bytes_per_token: float
    flops_per_token: float  # 2 x params / tp
    attention_flops_per_pair: float  # 4 x layers x heads/tp x head_dim
    allreduce_bytes_per_token: float  # 2 all-reduces per layer of hidden x dtype (x ring factor
    # for the datasheet guess; a fit's bandwidth already holds the algorithm's traffic)
    allreduce_latency_s: float  # 2 x layers x latency (0 without tensor parallelism)
    bandwidth_bytes_s: float
    flops_s: float
    pcie_bytes_s: float
    allreduce_bytes_s: float  # NVLink's datasheet bandwidth, or the fitted one
    decode_efficiency: float  # paged decode attention bandwidth / contiguous SDPA bandwidth
    step_overhead_s: float = STEP_OVERHEAD_S

    @classmethod
    def from_config(cls, config: RunConfig, *, decode_efficiency: float = 1.0,
                    allreduce: AllReduceFit | None = None) -> CostModel:
        """allreduce: a fit for config.tp ranks on this GPU (measured_allreduce), which replaces
        the guessed latency and NVLink bandwidth."""
        model, gpu, tp = config.model, config.gpu, config.tp
        ring, latency, link = 2 * (tp - 1) / tp, ALLREDUCE_LATENCY_S, gpu.nvlink_bytes_s
        if allreduce is not None:
            ring, latency, link = 1.0, allreduce.latency_s, allreduce.bytes_s
        return cls(
            weight_bytes=weight_bytes(model, tp),
            bytes_per_token=bytes_per_token(model, tp, config.kv_dtype),
            flops_per_token=2 * model.num_params / tp,
            attention_flops_per_pair=4 * model.num_layers * (model.num_heads // tp)
            * model.head_dim,
            allreduce_bytes_per_token=2 * model.num_layers * model.hidden_size * model.dtype_bytes
            * ring,
            allreduce_latency_s=2 * model.num_layers * latency if tp > 1 else 0.0,
            bandwidth_bytes_s=gpu.bandwidth_bytes_s * MEMORY_EFFICIENCY,
            flops_s=gpu.bf16_flops * COMPUTE_EFFICIENCY,
            pcie_bytes_s=gpu.pcie_bytes_s,
            allreduce_bytes_s=link,
            decode_efficiency=decode_efficiency,
        )

    def step_s(
        self,
        *,
        prefill_tokens: int,
        decode_tokens: int,
        prefill_context_tokens: int,
        decode_context_tokens: int,
        prefill_attention_pairs: int,
        decode_max_context: int = 0,
        swap_tokens: int = 0,
        maximum=max,
    ):
        """Seconds of one step. Decode reads its context through the paged kernel (scaled by
        its efficiency), every KV token at the same bandwidth, so the longest context
        (decode_max_context) costs nothing apart; prefill attention is compute-bound and read
        at full bandwidth.
        swap_tokens: tokens of KV the step moves over PCIe (Batch.pcie_tokens).
        Any argument may be a numpy array (with maximum=np.maximum) to price many steps at once
        with the very same arithmetic."""
        tokens = prefill_tokens + decode_tokens
        kv_bytes = self.bytes_per_token * (
            prefill_context_tokens + decode_context_tokens / self.decode_efficiency + tokens
        )
        memory_s = (self.weight_bytes + kv_bytes) / self.bandwidth_bytes_s
        pairs = prefill_attention_pairs + decode_context_tokens
        compute_s = (self.flops_per_token * tokens + self.attention_flops_per_pair * pairs) / (
            self.flops_s
        )
        step = maximum(memory_s, compute_s) + self.step_overhead_s
        if self.allreduce_latency_s:
            step += self.allreduce_latency_s + tokens * self.allreduce_bytes_per_token / (
                self.allreduce_bytes_s
            )
        if swap_tokens:
            step += swap_tokens * self.bytes_per_token / self.pcie_bytes_s
        return step


def decode_efficiency(
    gpu_name: str, block_size: int, *, contiguous: bool, results_dir: Path | None = None
) -> tuple[float, str | None]:
    """(efficiency, source file) of the paged decode kernel at block_size on this GPU family.

    Efficiency is the median, over the benchmark's shapes, of paged bandwidth / SDPA bandwidth
    at the same (batch, context); the nearest measured block size (in log2) stands in for one
    not measured. With no table for this GPU the kernel is taken at the SDPA ceiling (1.0).
    """
    family = gpu_name.split("-")[0].lower()
    where = Path(results_dir) if results_dir is not None else measured_results_dir()
    other_dtypes = tuple(f"{KERNEL_TABLE_PREFIX}{name}_" for name in KV_DTYPES)
    files = sorted(p for p in where.glob(f"{KERNEL_TABLE_PREFIX}*.csv")
                   if family in p.name.lower() and not p.name.startswith(other_dtypes))
    if not files:
        return 1.0, None
    table = _efficiency_table(files[0], "contiguous" if contiguous else "shuffled")
    if not table:
        return 1.0, None
    nearest = min(table, key=lambda bs: (abs(math.log2(bs) - math.log2(block_size)), bs))
    return table[nearest], str(files[0].name)


def _efficiency_table(path: Path, layout: str) -> dict[int, float]:
    """block_size -> median paged/SDPA bandwidth ratio over matching shapes of one layout."""
    rows = read_measurement(path).table.to_dict("records")
    sdpa = {
        (r["batch"], r["context"]): float(r["bandwidth_gbs"]) for r in rows if r["impl"] == "sdpa"
    }
    ratios: dict[int, list[float]] = {}
    for r in rows:
        key = (r["batch"], r["context"])
        if r["impl"] != "paged" or r["layout"] != layout or not sdpa.get(key):
            continue
        ratios.setdefault(int(r["block_size"]), []).append(float(r["bandwidth_gbs"]) / sdpa[key])
    return {bs: statistics.median(v) for bs, v in sorted(ratios.items())}


def decode_bandwidth_ratio(kv_dtype: str, gpu_name: str, block_size: int, *,
                           results_dir: Path | None = None) -> tuple[float, str | None]:
    """(ratio, source file): the KV bandwidth of the paged decode kernel over a kv_dtype cache
    divided by its bandwidth over a bf16 cache, median over the shapes measured both ways at
    the measured block size nearest block_size (in log2). From this GPU family's
    paged_decode_<kv_dtype>_ table, else another GPU's: a measured kernel over a guess, and a
    conservative one, since the fp8 loop is bound by instruction issue and a GPU of lower
    bandwidth leaves it less far behind (kernels/paged_decode.py, kernels/fp8_decode.py). (1.0,
    None) for bf16 and where nothing is measured: the bytes stream at bf16's bandwidth."""
    if kv_dtype == DEFAULT_KV_DTYPE:
        return 1.0, None
    where = Path(results_dir) if results_dir is not None else measured_results_dir()
    files = sorted(where.glob(f"{KERNEL_TABLE_PREFIX}{kv_dtype}_*.csv"),
                   key=lambda p: (gpu_name.split("-")[0].lower() not in p.name.lower(), p.name))
    for path in files:
        ratios = _dtype_ratios(read_measurement(path).table, kv_dtype)
        if ratios:
            nearest = min(ratios, key=lambda bs: (abs(math.log2(bs) - math.log2(block_size)), bs))
            return ratios[nearest], path.name
    return 1.0, None


def _dtype_ratios(table, kv_dtype: str) -> dict[int, float]:
    """block_size -> median over shapes of kv_dtype bandwidth / bf16 bandwidth."""
    key = ["batch", "context", "block_size", "layout"]
    both = table[table["kv_dtype"] == kv_dtype].merge(
        table[table["kv_dtype"] == DEFAULT_KV_DTYPE], on=key, suffixes=("", "_base"))
    both = both[both["bandwidth_gbs_base"] > 0]
    ratios = both["bandwidth_gbs"] / both["bandwidth_gbs_base"]
    return {int(bs): float(statistics.median(r))
            for bs, r in ratios.groupby(both["block_size"]) if len(r)}
