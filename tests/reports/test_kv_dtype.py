"""The KV dtype comparison: runs of another dtype are kept out of the sections and paired with
the study's runs of the same point; the takeaway states the figures of those runs; the measured
fp8 tables get their own page."""
from __future__ import annotations

import json

import pytest

from reports.build import build_report
from reports.kv_dtype import kernel_ratios, kv_dtype_comparisons, measured_kv_pages, takeaway
from reports.load import load_run
from reports.measured import find_measurements, is_kernel, is_kv_accuracy, is_kv_dtype_kernel
from reports.schema import KV_ACCURACY_COLUMNS, read_measurement
from reports.study import split_kv_dtype
from reports.units import count

RATES = (1.0, 2.0, 4.0)


def _kv(path, kv_dtype, **summary):
    """A synthetic run directory recorded with kv_dtype, its summary figures overridden."""
    meta = json.loads((path / "run.json").read_text())
    meta["config"]["kv_dtype"] = kv_dtype
    meta["summary"].update(summary)
    (path / "run.json").write_text(json.dumps(meta))
    return path


def _pair(make_run, tmp_path):
    """paged at three rates with bf16 (preempting from the second rate on) and with fp8."""
    bf16 = [make_run(tmp_path / f"paged-x{r:g}", rate_scale=r, seed=i)
            for i, r in enumerate(RATES)]
    for path, preemptions in zip(bf16, (0, 7, 30)):
        meta = json.loads((path / "run.json").read_text())
        meta["summary"]["preemptions"] = preemptions
        (path / "run.json").write_text(json.dumps(meta))
    fp8 = [_kv(make_run(tmp_path / f"paged-fp8-x{r:g}", rate_scale=r, seed=10 + i), "fp8",
               budget_slots=200_000, bytes_per_token=65_536, preemptions=i)
           for i, r in enumerate(RATES)]
    others = [make_run(tmp_path / f"static-x{r:g}", allocator="static", rate_scale=r, seed=20)
              for r in RATES]
    return bf16, fp8, others


def test_the_dtype_most_runs_have_is_the_studys(make_run, tmp_path):
    bf16, fp8, others = _pair(make_run, tmp_path)
    runs = [load_run(path) for path in [*bf16, *fp8, *others]]
    study, other = split_kv_dtype(runs)
    assert {run.kv_dtype for run in study} == {"bf16"} and len(study) == 6
    assert [run.path for run in other] == fp8
    # A study run all in fp8 keeps fp8 in its sections; a tie goes to the default.
    study, other = split_kv_dtype([load_run(p) for p in fp8] + [load_run(bf16[0])])
    assert {run.kv_dtype for run in study} == {"fp8"} and len(other) == 1
    study, _ = split_kv_dtype([load_run(fp8[0]), load_run(bf16[0])])
    assert study[0].kv_dtype == "bf16"


def test_comparisons_pair_the_same_allocator_and_state_its_figures(make_run, tmp_path, facts):
    bf16, fp8, others = _pair(make_run, tmp_path)
    study, other = split_kv_dtype([load_run(path) for path in [*bf16, *fp8, *others]])
    (comparison,) = kv_dtype_comparisons(study, other, facts)
    assert comparison.label == "paged" and list(comparison.curves) == ["bf16", "fp8"]
    assert len(comparison.rates) == len(RATES)
    # The lowest rate at which bf16 preempted.
    assert comparison.compared_rate == comparison.rates[1]
    runs = comparison.at(comparison.compared_rate)
    text = takeaway(comparison)
    assert f"holds {count(200_000)} against {count(100_000)} tokens (2.00x)" in text
    peaks = [count(runs[dtype].figure("peak_running")) for dtype in ("fp8", "bf16")]
    assert f"up to {peaks[0]} against {peaks[1]} sequences" in text
    assert "preempted 1 against 7 times" in text


def test_the_report_keeps_fp8_runs_out_of_the_sections(make_run, tmp_path, facts):
    bf16, fp8, others = _pair(make_run, tmp_path)
    titles = build_report([*bf16, *fp8, *others], tmp_path / "r.pdf",
                          results_dir=tmp_path / "absent", allocators=facts)
    assert "azure-conv: paged with fp8 against bf16 KV (simulated)" in titles
    assert "FP8 KV measured on GPU: decode speed and accuracy" in titles
    import pypdf

    texts = [page.extract_text() for page in pypdf.PdfReader(tmp_path / "r.pdf").pages]
    section = texts[titles.index("azure-conv: KV memory utilization over time")]
    assert "paged-fp8" not in section and "fp8" not in section
    assert "KV dtype comparison runs" in texts[0] and "paged fp8 KV" in texts[0]


def test_without_another_dtype_or_measurements_there_is_no_kv_page(make_run, tmp_path):
    titles = build_report([make_run(tmp_path / "p")], tmp_path / "r.pdf",
                          results_dir=tmp_path / "absent")
    assert not any("KV (simulated)" in title or title.startswith("FP8") for title in titles)


FP8_KERNEL = """# device: NVIDIA H200
# date: 2026-01-01
# command: python benchmarks/bench_paged_decode_fp8.py --out OUT
batch,context,block_size,layout,impl,median_us,kv_bytes,bandwidth_gbs,copy_bandwidth_gbs,max_abs_err,kv_dtype
8,4096,16,shuffled,paged,100,2000,20,3000,0.0002,bf16
8,4096,16,shuffled,paged,80,1000,12.5,3000,0.004,fp8
32,4096,16,shuffled,paged,400,8000,20,3000,0.0003,bf16
32,4096,16,shuffled,paged,250,4000,16,3000,0.005,fp8
"""


def _accuracy_csv(path):
    rows = [("llama3.2-1b", 256, 256, 0.02, 3.0, 0.05, 20.0, 1.0, 256),
            ("llama3.2-1b", 4096, 256, 0.04, 3.5, 0.09, 21.0, 0.75, 40)]
    path.write_text("# device: NVIDIA H200\n# date: 2026-01-01\n" + ",".join(KV_ACCURACY_COLUMNS)
                    + "\n" + "\n".join(",".join(map(str, row)) for row in rows) + "\n")
    return path


def test_the_measured_fp8_tables_are_found_apart_from_the_kernel_benchmark(tmp_path,
                                                                          kernel_csv):
    results = kernel_csv.parent
    (results / "paged_decode_fp8_h200.csv").write_text(FP8_KERNEL)
    _accuracy_csv(results / "fp8_accuracy_h200.csv")
    kernels, others = find_measurements(results)
    assert [m.path.name for m in kernels] == [kernel_csv.name]
    assert all(is_kernel(m) for m in kernels)
    assert [m.path.name for m in others if is_kv_dtype_kernel(m)] == [
        "paged_decode_fp8_h200.csv"]
    assert [m.path.name for m in others if is_kv_accuracy(m)] == ["fp8_accuracy_h200.csv"]


def test_the_measured_page_states_speed_and_agreement_from_the_tables(tmp_path):
    (tmp_path / "k.csv").write_text(FP8_KERNEL)
    kernel = read_measurement(tmp_path / "k.csv")
    ratios = kernel_ratios(kernel.table)
    assert ratios["speed"].tolist() == pytest.approx([100 / 80, 400 / 250])
    accuracy = read_measurement(_accuracy_csv(tmp_path / "a.csv"))
    pages = measured_kv_pages([kernel], [accuracy])
    text = " ".join(t.get_text() for page in pages for t in page.texts)
    assert f"{100 / 80:.2f}-{400 / 250:.2f}x its tokens of context per second" in text
    assert "same token 87.5% of the time (worst prompt 75.0%)" in text
    assert "first difference came at step 40 (1 of 2 prompts differed at all)" in text
    none = " ".join(t.get_text() for page in measured_kv_pages([], []) for t in page.texts)
    assert none.count("not measured yet") == 2
