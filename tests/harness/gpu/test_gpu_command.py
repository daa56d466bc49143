"""`kvharness gpu` writes the tables of `kvharness simulate`, measured, plus kv_allocated_bytes."""
from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("torch")

from harness.cli import main  # noqa: E402
from reports.schema import REQUEST_COLUMNS, STEP_COLUMNS  # noqa: E402


@pytest.mark.parametrize("allocator", ["static", "hybrid"])
def test_gpu_command_writes_a_measured_run(tmp_path, allocator):
    out = tmp_path / "run"
    code = main([
        "gpu", "--model", "tiny", "--requests", "6", "--rate-scale", "50", "--max-model-len", "96",
        "--allocator", allocator, "--param", "block_size=8" if allocator == "hybrid"
        else "align_tokens=8", "--budget-slots", "4096", "--dtype", "float32", "--device", "cpu",
        "--out", str(out), "--no-progress",
    ])
    assert code == 0
    steps = pd.read_parquet(out / "steps.parquet")
    requests = pd.read_parquet(out / "requests.parquet")
    run = json.loads((out / "run.json").read_text())
    assert list(steps.columns) == [*STEP_COLUMNS, "kv_allocated_bytes"]
    assert list(requests.columns) == list(REQUEST_COLUMNS)
    assert (requests.status == "completed").all()
    assert run["executor"] == "gpu" and run["device"] == "cpu"
    assert run["executor_details"]["attention"] == "reference"
    assert (steps.step_ms > 0).all()
    # The pool holds at least what the allocator backs (a partial last segment is whole).
    bytes_per_slot = 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads of 16, float32
    assert (steps.kv_allocated_bytes >= steps.backed * bytes_per_slot).all()


def test_gpu_command_runs_an_fp8_pool(tmp_path):
    out = tmp_path / "run"
    assert main(["gpu", "--model", "tiny", "--requests", "4", "--rate-scale", "50",
                 "--max-model-len", "64", "--allocator", "paged", "--budget-slots", "1024",
                 "--dtype", "float32", "--kv-dtype", "fp8", "--device", "cpu", "--out", str(out),
                 "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["kv_dtype"] == "fp8"
    assert run["executor_details"]["kv_dtype"] == "float8_e4m3fn"
    assert run["summary"]["bytes_per_token"] == 2 * 2 * 2 * 16  # one byte per element
    steps = pd.read_parquet(out / "steps.parquet")
    assert (steps.kv_allocated_bytes >= steps.backed * 2 * 2 * 2 * 16).all()
    assert (pd.read_parquet(out / "requests.parquet").status == "completed").all()


def test_gpu_command_rejects_unknown_allocator_parameters(capsys):
    code = main(["gpu", "--model", "tiny", "--param", "colour=blue", "--device", "cpu"])
    assert code == 2
    assert "--param" in capsys.readouterr().err


def test_gpu_command_passes_skip_invalid_and_format_to_the_loader(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,374,44\n"
                     "2023-11-16 18:15:50.9951690,-396,109\n"  # line 3: invalid
                     "2023-11-16 18:15:51.2224670,879,55\n")
    argv = ["gpu", "--trace", str(trace), "--model", "tiny", "--max-model-len", "96",
            "--budget-slots", "4096", "--dtype", "float32", "--device", "cpu",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 2
    assert "line 3" in capsys.readouterr().err
    assert main([*argv, "--skip-invalid", "--format", "azure"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["trace"]["rows"] == 2


@pytest.mark.parametrize("flags, recorded", [
    (["--n", "2"], {"n": 2}),
    (["--beam-width", "2"], {"beam_width": 2}),
    (["--spec-tokens", "2", "--spec-accept", "0.5"], {"spec_tokens": 2, "spec_accept": 0.5}),
])
def test_gpu_command_decodes_as_its_flags_say_and_records_them(tmp_path, flags, recorded):
    out = tmp_path / "run"
    assert main([
        "gpu", "--model", "tiny", "--requests", "4", "--max-model-len", "96", "--allocator",
        "paged", "--budget-slots", "4096", "--dtype", "float32", "--device", "cpu", "--out",
        str(out), "--no-progress", *flags,
    ]) == 0
    spec = json.loads((out / "run.json").read_text())["trace"]["spec"]
    assert {k: spec[k] for k in recorded} == recorded  # `simulate --from` replays it so
    assert (pd.read_parquet(out / "requests.parquet").status == "completed").all()
    steps = pd.read_parquet(out / "steps.parquet")
    if "--spec-tokens" in flags:
        assert (steps.decode_tokens > steps.running).any()  # verifications of drafts
    else:
        assert (steps.live < steps.logical).any()  # samples or beams share the prompt


def test_decode_balance_flag_reaches_the_backend(tmp_path, monkeypatch):
    """--decode-balance (auto unless given) builds the decoder with that balance: the Triton
    backend's on a GPU (the reference, which a CPU runs, reads context lengths itself and needs
    no work lists)."""
    import torch

    import harness.gpu.executor as executor_module
    from harness.gpu.attention import default_backend

    built = []
    real = executor_module.build_decoder

    def spy(*args, **kwargs):
        built.append(kwargs["decode_balance"])
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "build_decoder", spy)
    for i, flags in enumerate(([], ["--decode-balance", "on"])):
        out = tmp_path / f"run{i}"
        assert main(["gpu", "--model", "tiny", "--requests", "3", "--max-model-len", "64",
                     "--allocator", "paged", "--budget-slots", "1024", "--dtype", "float32",
                     "--device", "cpu", "--out", str(out), "--no-progress", *flags]) == 0
        details = json.loads((out / "run.json").read_text())["executor_details"]
        assert details["decode_balance_skew"] is None and details["balanced_decode_steps"] == 0
    assert built == ["auto", "on"]
    assert default_backend(torch.device("cuda"), decode_balance="on").decode_balance == "on"
    assert default_backend(torch.device("cuda")).decode_balance == "auto"
    with pytest.raises(ValueError, match="decode_balance"):
        default_backend(torch.device("cuda"), decode_balance="always")