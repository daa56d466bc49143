"""The report PDF: its pages, their order, and that every figure carries data (read back from
the PDF's text: matplotlib keeps text as text with TrueType fonts)."""
from __future__ import annotations

import re

import pytest

from reports.build import SECTION_PAGES, build_report

pypdf = pytest.importorskip("pypdf")

ALLOCATORS = ("static", "paged", "segmented", "hybrid")
NO_DATA = ("no engine steps recorded", "no request reached this point", "no runs for this trace")


def _pdf_text(path) -> list[str]:
    """Each page's text with whitespace collapsed (extraction breaks lines at will)."""
    return [re.sub(r"\s+", " ", page.extract_text()) for page in pypdf.PdfReader(path).pages]


@pytest.fixture
def two_traces(make_run, tmp_path):
    dirs = [make_run(tmp_path / f"{trace}-{name}", allocator=name, trace=trace, seed=i)
            for trace in ("azure-conv", "mooncake-conv") for i, name in enumerate(ALLOCATORS)]
    dirs += [make_run(tmp_path / f"paged-{bs}", allocator="paged", trace="azure-conv",
                      block_size=bs, seed=bs) for bs in (8, 32)]
    return dirs


def test_full_report_pages_and_data(two_traces, kernel_csv, tmp_path, facts):
    out = tmp_path / "out" / "report.pdf"
    titles = build_report(two_traces, out, results_dir=kernel_csv.parent, allocators=facts)
    texts = _pdf_text(out)
    assert len(texts) == len(titles)
    for title, text in zip(titles, texts):
        assert title.split(":")[0] in text
    verdict_pages = [i for i, title in enumerate(titles) if title.startswith("The verdict")]
    assert verdict_pages[0] == 1  # right after the title page; it may continue
    first = verdict_pages[-1] + 1
    section = texts[first:first + 2 * len(SECTION_PAGES)]
    assert [t.split(":")[0] for t in titles[first:first + 2 * len(SECTION_PAGES)]] == (
        ["azure-conv"] * len(SECTION_PAGES) + ["mooncake-conv"] * len(SECTION_PAGES))
    assert len(titles) == first + 2 * len(SECTION_PAGES) + 4  # ablation, kernel, GPU, fidelity
    for text in section:
        assert not any(marker in text for marker in NO_DATA), text[:120]
        assert all(name in text for name in ALLOCATORS), text[:120]
    assert "paged bs=8" in section[0] and "paged bs=32" in section[0]
    verdict = " ".join(texts[i] for i in verdict_pages)
    assert "At a glance" in verdict
    assert "reserves max_model_len up front" in verdict
    ablation, kernel, decode, fidelity = texts[-4:]
    assert "Not measured yet" in fidelity
    assert "bs=8" in ablation and "bs=32" in ablation
    assert "NVIDIA H100 80GB HBM3" in kernel and "2025-01-15" in kernel
    assert "no GPU measurement committed yet" not in kernel
    assert "no GPU measurement committed yet" in decode
    assert pypdf.PdfReader(out).metadata.title.startswith("kvharness report")


def test_report_without_measurements_says_so(make_run, tmp_path):
    out = tmp_path / "r.pdf"
    build_report([make_run(tmp_path / "p")], out, results_dir=tmp_path / "absent")
    texts = _pdf_text(out)
    assert "no block-size sweep among these runs" in texts[-4]
    assert "no GPU measurement committed yet" in texts[-3]
    assert "no GPU measurement committed yet" in texts[-2]
    assert "Not measured yet" in texts[-1]


@pytest.mark.parametrize("kwargs, says", [
    ({"num_requests": 0}, "empty run"),
    ({"num_requests": 1}, "only one request"),
    ({"num_requests": 4, "status": "rejected"}, "all 4 requests were rejected"),
])
def test_degenerate_runs_make_a_valid_pdf_that_says_so(make_run, tmp_path, kwargs, says):
    out = tmp_path / "r.pdf"
    titles = build_report([make_run(tmp_path / "run", **kwargs)], out,
                          results_dir=tmp_path / "absent")
    texts = _pdf_text(out)
    assert len(texts) == len(titles) == 2 + len(SECTION_PAGES) + 4
    assert says in texts[1]
    if kwargs["num_requests"] != 1:
        assert "no engine steps recorded" in texts[2]


def test_no_runs_still_makes_a_pdf(tmp_path):
    out = tmp_path / "r.pdf"
    build_report([], out, results_dir=tmp_path / "absent")
    texts = _pdf_text(out)
    assert "nothing to show" in texts[0]
    assert "nothing to judge" in texts[1]


def test_source_date_epoch_makes_the_pdf_byte_identical(make_run, tmp_path, monkeypatch):
    """The reproducible-builds convention: with SOURCE_DATE_EPOCH the build time on the title
    page and in the metadata is that instant, so the same runs give the same bytes."""
    run = make_run(tmp_path / "p")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01 00:00 UTC
    first, second = tmp_path / "a.pdf", tmp_path / "b.pdf"
    build_report([run], first, results_dir=tmp_path / "absent")
    build_report([run], second, results_dir=tmp_path / "absent")
    assert first.read_bytes() == second.read_bytes()
    assert "Report built 2026-01-01 00:00 UTC" in _pdf_text(first)[0]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "next tuesday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH must be whole seconds"):
        build_report([run], first, results_dir=tmp_path / "absent")
