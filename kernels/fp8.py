"""FP8 KV cache (float8 e4m3fn): the scales, their checks and the rounding the kernels share.

A pool in torch.float8_e4m3fn stores K/V divided by a scale and rounded to the nearest e4m3
value (saturating at +-448); the kernels multiply by the scale again after loading. Scales are
static, passed by the caller with every call as vLLM passes k_scale / v_scale: float32 tensors
per layer, either one value for K and one for V (per-tensor) or one per KV head ([num_kv_heads],
per-head, for models whose heads differ in range). Tensors rather than Python floats, so that a
captured CUDA graph reads whatever scales the tensors hold when it replays. The executor picks
them once, from a calibration batch: kv_scales(k) and kv_scales(v) give amax / 448, the
smallest scale at which no value of that batch saturates. A later value beyond the calibrated
range is clamped to +-448 * scale rather than overflowing to NaN.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.segments import KVLayoutError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max; the kernels spell it out


QUERY_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype == FP8_DTYPE


def check_query_dtype(q_dtype: torch.dtype, cache_dtype: torch.dtype) -> None:
    """The attention kernels read a cache in q's dtype, or an fp8 cache with q in any of
    QUERY_DTYPES (the loaded K/V are converted to q's dtype, exactly)."""
    if is_fp8(cache_dtype):
        if q_dtype not in QUERY_DTYPES:
            raise KVLayoutError(f"q is {q_dtype}; over a {FP8_DTYPE} cache it must be one of "
                                f"{', '.join(map(str, QUERY_DTYPES))}")
    elif q_dtype != cache_dtype:
        raise KVLayoutError(f"q is {q_dtype} but the cache is {cache_dtype}")


def kv_scales(x: torch.Tensor, per_head: bool = False) -> torch.Tensor:
    """Calibration scales amax / FP8_MAX for K or V of one layer, x [T, num_kv_heads, D]:
    shape [num_kv_heads] with per_head, else [1]. An all-zero head gets scale 1."""
    amax = x.detach().abs().float().amax(dim=(0, 2) if per_head else None).reshape(-1)
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def scale_stride(scale: torch.Tensor | None, num_kv_heads: int, name: str,
                 device: torch.device) -> int:
    """Elements between the scales of consecutive KV heads: 0 for one scale, 1 per head."""
    if scale is None:
        raise KVLayoutError(f"the cache is {FP8_DTYPE}: pass {name} (float32, one value or "
                            f"one per KV head; kernels.fp8.kv_scales computes them)")
    if scale.dtype != torch.float32 or scale.device != device:
        raise KVLayoutError(f"{name} must be float32 on {device}, got {scale.dtype} on "
                            f"{scale.device}")
    if scale.numel() == 1:
        return 0
    if scale.shape != (num_kv_heads,) or scale.stride(0) != 1:
        raise KVLayoutError(f"{name} has shape {tuple(scale.shape)}: needs one value or a "
                            f"contiguous [{num_kv_heads}], one per KV head")
    return 1


def check_scales(cache_dtype: torch.dtype, k_scale: torch.Tensor | None,
                 v_scale: torch.Tensor | None, num_kv_heads: int,
                 device: torch.device) -> tuple[int, int]:
    """Scale strides for K and V (0, 0 when the cache is not fp8 and no scales are given)."""
    if not is_fp8(cache_dtype):
        if k_scale is not None or v_scale is not None:
            raise KVLayoutError(f"k_scale / v_scale given but the cache is {cache_dtype}: "
                                f"scales apply to a {FP8_DTYPE} cache only")
        return 0, 0
    return (scale_stride(k_scale, num_kv_heads, "k_scale", device),
            scale_stride(v_scale, num_kv_heads, "v_scale", device))


@triton.jit
def e4m3_bits(x):
    """float32 x, already within +-448, rounded to the nearest e4m3 value (ties to even) as
    its uint8 bit pattern. The Triton interpreter's own float32 -> float8 conversion drops the
    carry of a rounded-up mantissa (1.98 becomes 1.0) and flushes subnormals, so the
    interpreter rounds here, in integer arithmetic on the float32 bits."""
    bits = x.to(tl.uint32, bitcast=True)
    sign = (bits >> 24) & 0x80
    mag = bits & 0x7FFFFFFF
    # Normal: keep 3 of the 23 mantissa bits, rounding to nearest even, then rebias the
    # exponent from 127 to 7; a carry out of the mantissa correctly bumps the exponent.
    normal = ((mag + 0x7FFFF + ((mag >> 20) & 1)) >> 20) - (120 << 3)
    # Subnormal: multiples of 2 ** -9, rounded to even by adding and removing 2 ** 23; a
    # round-up to 8 steps is 2 ** -6, whose code (exponent 1, mantissa 0) is also 8.
    steps = tl.abs(x) * 512.0
    sub = ((steps + 8388608.0) - 8388608.0).to(tl.uint32)
    code = tl.where(steps >= 8.0, normal, sub)
    return (code | sign).to(tl.uint8)


@triton.jit
def quantize(x, scale, EMULATE: tl.constexpr):
    """x / scale (x float32) rounded to e4m3, saturating at +-448. The division is the
    correctly rounded one, as in torch, so that GPU, interpreter and reference store the
    same bits."""
    y = tl.math.div_rn(x, scale)
    y = tl.clamp(y, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
    if EMULATE:
        return e4m3_bits(y).to(tl.float8e4nv, bitcast=True)
    return y.to(tl.float8e4nv)
