from __future__ import annotations

import pytest

from harness.model.config import AllocatorConfig, ConfigError, RunConfig, SchedulerConfig
from harness.model.presets import model_preset

TOML = """
seed = 7
tp = 2
gpu = "h200-141gb"
[model]
preset = "llama3-8b"
dtype_bytes = 1
[allocator]
name = "hybrid"
block_size = 32
segment_tokens = 4096
[scheduler]
max_num_seqs = 64
preemption = "swap"
"""


def test_toml_names_presets_overrides_fields_and_flattens_allocator_params(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    config = RunConfig.from_toml(path)
    assert config.seed == 7 and config.tp == 2
    assert config.gpu.name == "h200-141gb"
    assert config.model.num_layers == 32 and config.model.dtype_bytes == 1
    assert config.allocator == AllocatorConfig.of("hybrid", block_size=32, segment_tokens=4096)
    assert config.scheduler.max_num_seqs == 64 and config.scheduler.preemption == "swap"


def test_to_dict_round_trips_and_stays_hashable():
    config = RunConfig(
        allocator=AllocatorConfig.of("paged", block_size=8),
        scheduler=SchedulerConfig(chunked_prefill=False, max_model_len=4096),
        budget_slots_override=123,
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    hash(config)


def test_a_window_is_written_only_where_the_model_has_one():
    """run.json of a full-attention model reads as before windows existed (sweep cell hashes
    stay), and a window, the preset's or another, round-trips."""
    assert "sliding_window" not in RunConfig().to_dict()["model"]
    mistral = RunConfig(model=model_preset("mistral-7b"))
    assert mistral.to_dict()["model"]["sliding_window"] == 4096
    assert RunConfig.from_dict(mistral.to_dict()) == mistral
    narrow = RunConfig.from_dict({"model": {"preset": "mistral-7b", "sliding_window": 512}})
    assert narrow.model.sliding_window == 512 and narrow.model.num_layers == 32


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "run.yaml"
    path.write_text("model: qwen2.5-7b\nallocator: {name: static, align_tokens: 8}\n")
    config = RunConfig.from_file(path)
    assert config.model == model_preset("qwen2.5-7b")
    assert config.allocator.kwargs == {"align_tokens": 8}


@pytest.mark.parametrize(
    "data, match",
    [
        ({"tpp": 2}, "unknown field"),
        ({"scheduler": {"max_num_seq": 2}}, "unknown field"),
        ({"scheduler": {"preemption": "kill"}}, "preemption"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"model": {"preset": "llama3-8b", "layers": 3}}, "unknown field"),
        ({"model": {"preset": "mistral-7b", "sliding_window": 0}}, "sliding_window"),
    ],
)
def test_bad_values_are_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(data)


def test_broken_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("seed = = 1")
    with pytest.raises(ConfigError, match="bad.toml"):
        RunConfig.from_toml(path)
