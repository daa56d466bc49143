"""The simulate and plan subcommands, end to end through the kvharness entry point."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.cli import main
from reports.schema import HOST_TIER_SUMMARY_KEYS, SUMMARY_KEYS

pytest.importorskip("workloads")


def test_simulate_writes_a_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "--trace", "azure-conv", "--requests", "40", "--allocator", "hybrid",
                 "--block-size", "32", "--param", "segment_tokens=4096", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["allocator"] == {"name": "hybrid",
                                          "params": {"block_size": 32, "segment_tokens": 4096}}
    assert run["trace"] == {"name": "azure-conv", "source": run["trace"]["source"], "rows": 40,
                            "spec": {**run["trace"]["spec"], "source": "azure-conv",
                                     "max_requests": 40}}
    assert run["executor"] == "costmodel" and run["device"] is None
    assert tuple(run["summary"]) == SUMMARY_KEYS
    assert len(pd.read_parquet(out / "requests.parquet")) == 40
    # No profile of llama3-8b on an H100 is committed: the roofline prices it, and says so.
    assert run["executor_details"]["cost_model"] == "roofline"
    err = capsys.readouterr().err
    assert "hybrid: 40/40 completed" in err and "priced by roofline" in err


def test_a_cpu_cache_reaches_the_config_and_the_summary_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "mooncake-conv", "--requests", "30", "--model",
                 "llama3.1-8b", "--budget-slots", "65536", "--cpu-cache-gib", "8", "--out",
                 str(out), "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["cpu_cache_bytes"] == 8 << 30
    assert tuple(run["summary"]) == SUMMARY_KEYS + HOST_TIER_SUMMARY_KEYS
    s = run["summary"]
    assert s["host_offload_bytes"] > 0  # 30 long prompts overflow 65,536 slots
    line = next(line for line in capsys.readouterr().err.splitlines() if "prefix hits" in line)
    assert line.startswith(f"paged: prefix hits {s['prefix_hit_rate_gpu']:.1%} GPU, ")
    assert f"PCIe {s['host_offload_bytes'] / 1e9:.1f} GB to the host tier" in line


def test_simulate_several_allocators_prints_a_table(tmp_path, capsys):
    code = main(["simulate", "--trace", "azure-conv", "--requests", "20", "--allocator",
                 "static,paged", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    assert (tmp_path / "static" / "steps.parquet").exists() and (tmp_path / "paged").exists()
    table = capsys.readouterr().out.splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["static", "paged"]


def test_truncate_cuts_what_max_model_len_would_reject(tmp_path):
    # The first 40 Mooncake requests hold prompts past llama3-8b's 8,192-token context.
    runs = {}
    for flags in ([], ["--truncate"]):
        out = tmp_path / ("cut" if flags else "plain")
        assert main(["simulate", "--trace", "mooncake-conv", "--requests", "40", "--model",
                     "llama3-8b", "--out", str(out), "--no-progress", *flags]) == 0
        runs[bool(flags)] = json.loads((out / "run.json").read_text())["summary"]
    assert runs[False]["rejected"] > 0 and runs[False]["truncated_prompts"] == 0
    assert runs[True]["rejected"] == 0
    assert runs[True]["truncated_prompts"] == runs[False]["rejected"]


def test_simulate_reads_a_toml_config_and_flags_override_it(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('seed = 5\n[scheduler]\nmax_num_seqs = 8\n[allocator]\nname = "static"\n')
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "azure-conv", "--requests", "10", "--config", str(config),
                 "--max-num-seqs", "4", "--out", str(out), "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 5 and run["config"]["scheduler"]["max_num_seqs"] == 4
    assert run["config"]["allocator"]["name"] == "static"


def test_bad_input_is_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["simulate", "--trace", "azure-conv", "--model", "gpt-9", "--out",
                 str(tmp_path), "--no-progress"]) == 2
    assert "unknown model 'gpt-9'" in capsys.readouterr().err


def test_plan_warns_about_a_context_past_memory(capsys):
    assert main(["plan", "--model", "llama3-8b", "--gpu", "h200-141gb", "--tp", "8",
                 "--max-model-len", "10000000"]) == 0
    out = capsys.readouterr().out
    assert "static preallocation fails at start" in out
    assert "8,104,320" in out  # the clamp, in whole 16-token units


def test_plan_json(capsys):
    assert main(["plan", "--context", "4096", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["bytes_per_token"] == 131072
    assert [a["name"] for a in plan["allocators"]] == ["static", "paged", "segmented", "hybrid"]


def test_plan_with_fp8_kv_holds_twice_the_tokens(capsys):
    plans = {}
    for dtype in ("bf16", "fp8"):
        assert main(["plan", "--context", "4096", "--json", "--kv-dtype", dtype]) == 0
        plans[dtype] = json.loads(capsys.readouterr().out)
    bf16, fp8 = plans["bf16"], plans["fp8"]
    assert (bf16["kv_dtype"], fp8["kv_dtype"]) == ("bf16", "fp8")
    assert fp8["bytes_per_token"] * 2 == bf16["bytes_per_token"]
    assert bf16["kv_scale_bytes"] == 0 < fp8["kv_scale_bytes"]
    assert fp8["kv_bytes"] == bf16["kv_bytes"] - fp8["kv_scale_bytes"]
    assert fp8["kv_tokens"] == fp8["kv_bytes"] // fp8["bytes_per_token"]
    concurrency = {dtype: {a["name"]: a["max_concurrency"] for a in plan["allocators"]}
                   for dtype, plan in plans.items()}
    assert all(concurrency["fp8"][name] >= 2 * concurrency["bf16"][name] for name in
               concurrency["bf16"])


def test_simulate_with_fp8_kv_records_it_and_replays_it(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["simulate", "--trace", "azure-conv", "--requests", "30", "--kv-dtype", "fp8",
                 "--out", str(first), "--no-progress"]) == 0
    run = json.loads((first / "run.json").read_text())
    assert run["config"]["kv_dtype"] == "fp8"
    assert "kv_decode_bandwidth_ratio" in run["executor_details"]
    assert run["summary"]["bytes_per_token"] == 65536  # llama3-8b: 2 x 32 x 8 x 128 x 1 byte
    assert main(["simulate", "--from", str(first / "run.json"), "--out", str(again),
                 "--no-progress"]) == 0
    for name in ("steps.parquet", "requests.parquet", "run.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name


def test_a_run_replays_byte_for_byte_from_its_own_run_json(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["simulate", "--trace", "mooncake-conv", "--requests", "60", "--rate-scale", "3",
                 "--allocator", "hybrid", "--param", "segment_tokens=4096", "--budget-slots",
                 "30000", "--preemption", "swap", "--out", str(first), "--no-progress"]) == 0
    assert main(["simulate", "--from", str(first / "run.json"), "--out", str(again),
                 "--no-progress"]) == 0
    for name in ("steps.parquet", "requests.parquet", "run.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    spec = json.loads((first / "run.json").read_text())["trace"]["spec"]
    assert spec["source"] == "mooncake-conv" and spec["max_requests"] == 60
    assert spec["rate_scale"] == 3.0


def test_from_a_run_of_an_in_memory_trace_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"config": {}, "trace": {"name": "synthetic", "spec": None}}))
    assert main(["simulate", "--from", str(run), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert "built in memory" in capsys.readouterr().err


def test_no_command_prints_help_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kvharness") and "run" in out and "report" in out
    assert list(tmp_path.iterdir()) == []


def test_find_replicas_cuts_over_long_requests_with_truncate(tmp_path, capsys):
    """Azure's first requests on a 1k-context model: some are longer than the context. Without
    --truncate they are rejected and no replica count serves every request; with it, one does."""
    args = ["simulate", "--trace", "azure-conv", "--requests", "30", "--allocator", "paged",
            "--max-model-len", "1024", "--find-replicas", "--slo-ttft-s", "60", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "rejected")]) == 0
    assert "paged: none of those tried" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "cut"), "--truncate"]) == 0
    assert "paged: 1 replicas" in capsys.readouterr().out
    run = json.loads((tmp_path / "cut" / "paged" / "replicas-1" / "run.json").read_text())
    assert run["trace"]["spec"]["cap_lengths_to"] == 1024


def test_the_window_flags_set_the_models_window(tmp_path):
    """mistral-7b brings its 4,096-token window; --sliding-window changes it, --full-attention
    drops it (and run.json says which ran)."""
    windows = {}
    for name, flags in (("own", []), ("narrow", ["--sliding-window", "512"]),
                        ("full", ["--full-attention"])):
        out = tmp_path / name
        assert main(["simulate", "--trace", "mooncake-conv", "--requests", "20", "--model",
                     "mistral-7b", "--truncate", "--allocator", "static", "--out", str(out),
                     "--no-progress", *flags]) == 0
        run = json.loads((out / "run.json").read_text())
        windows[name] = (run["config"]["model"].get("sliding_window"),
                         run["summary"]["waste_stale"])
    assert [w for w, _ in windows.values()] == [4096, 512, None]
    assert windows["narrow"][1] > windows["own"][1] > windows["full"][1] == 0


def test_window_command_runs_every_allocator_both_ways_and_writes_its_pages(tmp_path, capsys):
    out, pdf = tmp_path / "runs", tmp_path / "window.pdf"
    assert main(["window", "--requests", "30", "--out-dir", str(out), "-o", str(pdf),
                 "--no-progress"]) == 0
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("run.json"))
    assert runs == [f"mooncake-conv/{kind}/{name}" for kind in ("full", "window-4096")
                    for name in ("hybrid", "paged", "segmented", "static")]
    assert pdf.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "4,096-token sliding window" in printed and "(3 pages)" in printed


def test_window_command_needs_a_window(tmp_path, capsys):
    assert main(["window", "--model", "llama3-8b", "--out-dir", str(tmp_path)]) == 2
    assert "attends fully" in capsys.readouterr().err
