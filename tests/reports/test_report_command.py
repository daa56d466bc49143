"""`kvharness report`: arguments, output, and errors a user can act on."""
from __future__ import annotations

from harness.cli import main


def test_report_command_writes_the_pdf(make_run, tmp_path, capsys):
    out = tmp_path / "nested" / "r.pdf"
    code = main(["report", str(make_run(tmp_path / "run")), "-o", str(out),
                 "--results-dir", str(tmp_path / "absent")])
    assert code == 0
    assert out.read_bytes().startswith(b"%PDF")
    assert "pages" in capsys.readouterr().out


def test_report_command_names_a_bad_run_dir(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    code = main(["report", str(tmp_path / "broken"), "-o", str(tmp_path / "r.pdf")])
    assert code == 2
    assert "missing run.json" in capsys.readouterr().err
