"""The run configuration: one frozen dataclass that fully describes a run.

It flows top-down from the CLI or a TOML file (YAML too when PyYAML is installed). `to_dict()` and
`from_dict()` round-trip, so a run.json's "config" rebuilds the run that wrote it.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allocators import DEFAULT_ALLOCATOR, spec_of
from harness.model.presets import GIB, GpuSpec, ModelSpec, gpu_preset, model_preset
from reports.schema import DEFAULT_KV_DTYPE

PREEMPTION_MODES = ("recompute", "swap")

# Which decode steps run over work lists (kernels.work_list.WorkListPlan.skew, None: none):
# "on" every one, "auto" those whose longest context is over three times the mean, and those
# of one row (kernels.work_list.over_skew). Measured on an H200
# (benchmarks/results/tuning/decode_balance_2026-11-29_h200.csv), the balanced kernel takes up
# to 1.13x the split-KV launch's time on batches of equal contexts and 1.45-3.4x less where one
# context of 8,192 keys sits among ones of 1,000 (4.3x and 6.7x the mean); in the Azure x10
# run, 73% of the 17-32-sequence decode steps have a longest context over three times the mean.
# At one row it takes 0.67-0.96x the split-KV launch's time
# (benchmarks/results/decode_balance_h200.csv).
DECODE_BALANCE = {"off": None, "on": 0.0, "auto": 3.0}

# Replica scheduling policies (harness/engine/policies.py) and cluster routers
# (harness/cluster/router.py); named here so that a config is checked where it is built.
SCHEDULING_POLICIES = ("vllm-v1", "vllm-v0", "sarathi", "edf")
ROUTERS = ("round-robin", "least-outstanding", "least-kv", "prefix-aware")


@dataclass(frozen=True)
class KvDtype:
    """What one element of the KV cache takes. A scaled type stores K / scale and V / scale,
    with one float32 scale per layer and KV head for each (kernels/fp8.py)."""

    element_bytes: int
    scaled: bool


# The KV cache's element types: bf16 as the presets' weights, fp8 as e4m3. The model's
# dtype_bytes sizes weights and activations only.
KV_DTYPES = {"bf16": KvDtype(2, scaled=False), "fp8": KvDtype(1, scaled=True)}


class ConfigError(ValueError):
    """A configuration value that cannot describe a run (names the field and the value)."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous-batching limits; defaults are vLLM's (v1 engine, chunked prefill on)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    chunked_prefill: bool = True
    preemption: str = "recompute"  # "recompute" | "swap"
    swap_space_bytes: int = 4 * GIB  # CPU swap space per GPU (vLLM's --swap-space 4)
    max_model_len: int | None = None  # None: the model's context length
    policy: str = "vllm-v1"  # one of SCHEDULING_POLICIES
    chunk_size: int = 512  # sarathi: the fixed token budget of every step
    # edf: a request's TTFT deadline is arrival + ttft_slo_s + prompt tokens x this per-token
    # allowance, so that a long prompt is not late merely for being long.
    ttft_slo_s: float = 1.0
    ttft_slo_s_per_token: float = 1e-4

    def __post_init__(self) -> None:
        if self.preemption not in PREEMPTION_MODES:
            raise ConfigError(
                f"scheduler.preemption must be one of {PREEMPTION_MODES}, got {self.preemption!r}"
            )
        if self.policy not in SCHEDULING_POLICIES:
            raise ConfigError(
                f"scheduler.policy must be one of {SCHEDULING_POLICIES}, got {self.policy!r}"
            )
        if self.policy == "sarathi" and self.chunk_size < self.max_num_seqs:
            # Stall-free batching decodes every running sequence in every step.
            raise ConfigError(
                f"scheduler.chunk_size {self.chunk_size} must be >= max_num_seqs "
                f"{self.max_num_seqs}"
            )
        if self.ttft_slo_s <= 0 or self.ttft_slo_s_per_token < 0:
            raise ConfigError(
                f"scheduler.ttft_slo_s must be > 0 and ttft_slo_s_per_token >= 0, got "
                f"{self.ttft_slo_s} and {self.ttft_slo_s_per_token}"
            )
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"scheduler.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            # vLLM's rule too: every running sequence must be able to decode in one step.
            raise ConfigError(
                f"scheduler.max_num_batched_tokens {self.max_num_batched_tokens} must be >= "
                f"max_num_seqs {self.max_num_seqs}"
            )
        if self.swap_space_bytes < 0:
            raise ConfigError(
                f"scheduler.swap_space_bytes must be >= 0, got {self.swap_space_bytes}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"scheduler.max_model_len must be >= 1, got {self.max_model_len}")


@dataclass(frozen=True)
class AllocatorConfig:
    """An allocator by name and its constructor parameters (pairs, to stay hashable), checked
    and converted to their types by the allocator's spec (allocators.ParamError otherwise)."""

    name: str = DEFAULT_ALLOCATOR
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        valid = spec_of(self.name).validate(dict(self.params))
        object.__setattr__(self, "params", tuple(sorted(valid.items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @classmethod
    def of(cls, name: str, **params: Any) -> AllocatorConfig:
        return cls(name, tuple(sorted(params.items())))


@dataclass(frozen=True)
class RunConfig:
    """Model shape, GPU, budget, allocator, scheduler limits and seed of one run."""

    model: ModelSpec = field(default_factory=lambda: model_preset("llama3-8b"))
    gpu: GpuSpec = field(default_factory=lambda: gpu_preset("h100-80gb"))
    tp: int = 1
    gpu_memory_utilization: float = 0.9
    allocator: AllocatorConfig = AllocatorConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    seed: int = 0
    budget_slots_override: int | None = None  # skip the memory arithmetic: this many KV slots
    horizon_s: float | None = None  # stop the clock here; None runs until every request is done
    replicas: int = 1  # engines behind a router, each with this config's GPU, budget, allocator
    router: str = "round-robin"  # one of ROUTERS: which replica takes each arriving request
    kv_dtype: str = DEFAULT_KV_DTYPE  # one of KV_DTYPES: what the KV cache stores
    # Host memory per GPU for the CPU tier of the prefix cache (evicted prefix blocks wait there
    # until a hit copies them back); 0: no tier. Like vLLM's --kv-offloading-size.
    cpu_cache_bytes: int = 0

    def __post_init__(self) -> None:
        if self.kv_dtype not in KV_DTYPES:
            raise ConfigError(f"kv_dtype must be one of {tuple(KV_DTYPES)}, got "
                              f"{self.kv_dtype!r}")
        if self.tp < 1:
            raise ConfigError(f"tp must be >= 1, got {self.tp}")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {self.replicas}")
        if self.router not in ROUTERS:
            raise ConfigError(f"router must be one of {ROUTERS}, got {self.router!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.cpu_cache_bytes < 0:
            raise ConfigError(f"cpu_cache_bytes must be >= 0, got {self.cpu_cache_bytes}")
        window = self.model.sliding_window
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                                   or window < 1):
            raise ConfigError(f"model.sliding_window must be an integer >= 1 or none, got "
                              f"{window!r}")
        if self.budget_slots_override is not None and self.budget_slots_override < 0:
            raise ConfigError(
                f"budget_slots_override must be >= 0, got {self.budget_slots_override}"
            )

    @property
    def max_model_len(self) -> int | None:
        """The longest request served: the scheduler's limit where set, never past the model's
        context (None: neither sets one)."""
        limits = [x for x in (self.scheduler.max_model_len, self.model.max_model_len)
                  if x is not None]
        return min(limits) if limits else None

    def to_dict(self) -> dict[str, Any]:
        out = _drop_defaults(dataclasses.asdict(self), self, _LATER_FIELDS)
        out["model"] = _drop_defaults(out["model"], self.model, _LATER_MODEL_FIELDS)
        out["allocator"] = {"name": self.allocator.name, "params": self.allocator.kwargs}
        out["scheduler"] = _drop_defaults(out["scheduler"], self.scheduler,
                                          _LATER_SCHEDULER_FIELDS)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a mapping: presets by name ("llama3-8b") or as tables that may name a
        "preset" and override its fields; unknown keys are errors, not silently ignored."""
        data = dict(data)
        kwargs: dict[str, Any] = {}
        if "model" in data:
            kwargs["model"] = _spec(data.pop("model"), ModelSpec, model_preset, "model")
        if "gpu" in data:
            kwargs["gpu"] = _spec(data.pop("gpu"), GpuSpec, gpu_preset, "gpu")
        if "allocator" in data:
            kwargs["allocator"] = _allocator(data.pop("allocator"))
        if "scheduler" in data:
            kwargs["scheduler"] = _build(SchedulerConfig, dict(data.pop("scheduler")), "scheduler")
        kwargs.update(data)
        return _build(cls, kwargs, "config")

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        with open(path, "rb") as fh:
            try:
                return cls.from_dict(tomllib.load(fh))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """A .toml file, or a .yaml/.yml file when PyYAML is installed."""
        if Path(path).suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise ConfigError(f"{path}: YAML configs need PyYAML; use TOML") from None
            with open(path) as fh:
                return cls.from_dict(yaml.safe_load(fh) or {})
        return cls.from_toml(path)


# Fields added after runs and sweeps were first recorded: written only when they differ from
# their defaults, so that the run.json and the sweep cell hash of a run that does not use them
# stay what they were (from_dict fills them back in).
_LATER_FIELDS = ("replicas", "router", "kv_dtype", "cpu_cache_bytes")
_LATER_MODEL_FIELDS = ("sliding_window",)
_LATER_SCHEDULER_FIELDS = ("policy", "chunk_size", "ttft_slo_s", "ttft_slo_s_per_token")


def _drop_defaults(out: dict[str, Any], obj, names: tuple[str, ...]) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(obj)}
    return {k: v for k, v in out.items() if k not in names or v != defaults[k]}


def _build(cls, kwargs: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _spec(value: Any, cls, preset, where: str):
    if isinstance(value, str):
        return preset(value)
    fields = dict(value)
    base = fields.pop("preset", None)
    if base is not None:
        fields = {**dataclasses.asdict(preset(base)), **fields}
    return _build(cls, fields, where)


def _allocator(value: Any) -> AllocatorConfig:
    if isinstance(value, str):
        return AllocatorConfig(value)
    fields = dict(value)
    name = fields.pop("name", DEFAULT_ALLOCATOR)
    params = dict(fields.pop("params", {}))
    params.update(fields)  # TOML: flat keys of [allocator] beside its name are its parameters
    return AllocatorConfig.of(name, **params)
