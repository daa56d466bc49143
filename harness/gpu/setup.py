"""What a measured run starts from: a trace slice, and a RunConfig sized for the real device."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch

from harness.model.config import AllocatorConfig, RunConfig
from harness.model.presets import PresetError, gpu_preset, model_preset

CPU_BUDGET_SLOTS = 65536
# Device names (torch.cuda.get_device_name) to GPU presets, first match wins.
DEVICE_PRESETS = (("H200", "h200-141gb"), ("H100", "h100-80gb"), ("A100", "a100-80gb"))


def device_name(device: torch.device) -> str:
    """What run.json and the results files call the device."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def gpu_preset_for(device: torch.device) -> str:
    """The GPU preset of the device the run is on (the KV budget follows its memory)."""
    name = device_name(device)
    for key, preset in DEVICE_PRESETS:
        if key in name:
            return preset
    raise PresetError(f"no GPU preset for device {name!r}; pass --gpu or --budget-slots")


def load_slice(
    source: str, *, start: int = 0, count: int | None = None, rate_scale: float = 1.0,
    max_model_len: int | None = None, format: str | None = None, skip_invalid: bool = False,
    decoding: dict | None = None,
) -> pd.DataFrame:
    """A trace, cut to requests [start, start + count), replayed rate_scale times faster, with
    lengths capped at max_model_len, decoded as `decoding` says (the trace spec's n, beam_width,
    spec_tokens, spec_accept; None: as the trace says), each step noted in attrs["transforms"]
    and the whole in attrs["spec"]; format and skip_invalid as in workloads.load_trace."""
    from workloads import TraceSpec

    return TraceSpec(source, format=format, skip_invalid=skip_invalid, start=start,
                     max_requests=count, rate_scale=rate_scale, cap_lengths_to=max_model_len,
                     **(decoding or {})).load()


def gpu_run_config(
    device: torch.device,
    *,
    model: str,
    allocator: str,
    params: dict | None = None,
    base: Path | None = None,
    gpu: str | None = None,
    budget_slots: int | None = None,
    preemption: str | None = None,
    seed: int | None = None,
    tp: int | None = None,
    kv_dtype: str | None = None,
) -> RunConfig:
    """The run's config: the base TOML (or defaults) with the model, allocator, GPU,
    tensor-parallel width and KV dtype of this run; on a CPU the budget defaults to
    CPU_BUDGET_SLOTS slots."""
    config = RunConfig.from_file(base) if base else RunConfig()
    if budget_slots is None and device.type != "cuda":
        budget_slots = CPU_BUDGET_SLOTS
    changes = {
        "model": model_preset(model),
        "allocator": AllocatorConfig.of(allocator, **(params or {})),
    }
    if gpu or device.type == "cuda":
        changes["gpu"] = gpu_preset(gpu or gpu_preset_for(device))
    if budget_slots is not None:
        changes["budget_slots_override"] = budget_slots
    if seed is not None:
        changes["seed"] = seed
    if tp is not None:  # the KV budget is then per GPU: weights and heads are split tp ways
        changes["tp"] = tp
    if kv_dtype is not None:  # the budget then counts its bytes per element
        changes["kv_dtype"] = kv_dtype
    if preemption is not None:
        changes["scheduler"] = dataclasses.replace(config.scheduler, preemption=preemption)
    return dataclasses.replace(config, **changes)
