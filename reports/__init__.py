"""kvharness reports: run directories in, a design-review PDF out (matplotlib, PdfPages, Agg).

load (run directories, labels) -> verdict (who wins and why) -> pages: title, textpage (verdict),
timeline, waste, latency, table, gpu (block-size ablation and measured GPU figures from
measured) -> build (assembles the PDF). style keeps every page readable in greyscale.
Entry point: `reports.build.build_report(run_dirs, out_pdf)`; CLI: `kvharness report`.
"""
