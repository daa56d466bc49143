"""Tensor parallelism on the CPU (gloo): TP=2 samples the very tokens TP=1 does, through
prefill chunks, decode, prefix-cache hits, forks and preemption by swap."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from harness.gpu.model import DecoderConfig, random_weights  # noqa: E402
from harness.gpu.run import run_on_device  # noqa: E402
from harness.gpu.tp import ShardError, TensorParallel  # noqa: E402
from harness.gpu.tp_run import MULTICAST_OFF, run_tensor_parallel  # noqa: E402
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402


def _config(tp: int) -> RunConfig:
    return RunConfig(
        model=model_preset("tiny"), tp=tp,
        allocator=AllocatorConfig.of("paged", block_size=4),
        scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=48, preemption="swap"),
        budget_slots_override=120,
    )


def test_tp2_samples_the_tokens_of_tp1(tiny_decoder, small_trace, monkeypatch):
    shared = (11, 12, 13)
    trace = small_trace(1, 8, n=[1, 1, 3, 1, 1, 2, 1, 1], max_prompt=50, max_output=24,
                        prefix_hashes=[shared[: 1 + i % 3] + (100 + i,) for i in range(8)],
                        chunk_tokens=8)
    single, executor = run_on_device(_config(1), trace, tiny_decoder)
    for name in MULTICAST_OFF:
        monkeypatch.delenv(name, raising=False)
    split = run_tensor_parallel(_config(2), trace, device_type="cpu", dtype="float32")
    assert all(os.environ[k] == v for k, v in MULTICAST_OFF.items())  # and so in every rank
    s = split.result.summary
    assert s["preemptions"] > 0 and s["prefix_hit_tokens"] > 0
    assert split.details["swapped_out_seqs"] > 0 and split.details["tp"] == 2
    assert (split.result.requests.status == "completed").all()
    # Token for token, whatever batches the measured clock gave each run.
    assert split.outputs == executor.outputs()
    assert len(split.step_log) == len(split.result.steps)


def test_shards_put_back_together_are_the_full_weights():
    config = DecoderConfig.from_model_spec(model_preset("tiny"))
    full = random_weights(config, seed=3, dtype=torch.float32, device="cpu")
    ranks = [TensorParallel(config, rank=r, size=2) for r in range(2)]
    parts = [random_weights(config, seed=3, dtype=torch.float32, device="cpu", tp=tp)
             for tp in ranks]
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    for layer, (a, b) in zip(full.layers, (zip(*(p.layers for p in parts)))):
        def pieces(w, sizes):
            return w.split(sizes)
        qa, ka, va = pieces(a.qkv, [q // 2, kv // 2, kv // 2])
        qb, kb, vb = pieces(b.qkv, [q // 2, kv // 2, kv // 2])
        assert torch.equal(layer.qkv, torch.cat([qa, qb, ka, kb, va, vb]))
        assert torch.equal(layer.o, torch.cat([a.o, b.o], dim=1))
        assert torch.equal(layer.down, torch.cat([a.down, b.down], dim=1))
        ga, ua = a.gate_up.chunk(2)
        gb, ub = b.gate_up.chunk(2)
        assert torch.equal(layer.gate_up, torch.cat([ga, gb, ua, ub]))
    assert torch.equal(full.lm_head, torch.cat([p.lm_head for p in parts]))
    assert torch.equal(full.embed, parts[1].embed)


def test_uneven_split_is_refused():
    config = DecoderConfig.from_model_spec(model_preset("tiny"))  # 2 KV heads
    with pytest.raises(ShardError, match="num_kv_heads"):
        TensorParallel(config, rank=0, size=4)


def test_gpu_command_runs_tensor_parallel(tmp_path, capsys):
    import json

    from harness.cli import main

    out = tmp_path / "run"
    argv = ["gpu", "--model", "tiny", "--requests", "4", "--rate-scale", "50",
            "--max-model-len", "64", "--budget-slots", "1024", "--dtype", "float32",
            "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main([*argv, "--tp", "4"]) == 2  # the tiny model has 2 KV heads
    assert "num_kv_heads" in capsys.readouterr().err
    assert main([*argv, "--tp", "2"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["tp"] == 2 and run["executor_details"]["tp"] == 2
    assert "x2" in capsys.readouterr().out
