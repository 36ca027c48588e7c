"""Run every benchmark and write ``benchmarks/RESULTS.md``.

Each benchmark module exposes ``run() -> list[Figure]``: ratios of two things measured side by
side in the same run, each a median of at least 3 repeats. A benchmark that crashes is reported
as a failed row with its error, and the others still run. Where a GPU is present, the GPU table
of ``gpu.py`` is added; otherwise the last GPU table saved in ``benchmarks/gpu_results.json``
(if any) is included with the card it ran on.

Run: ``python benchmarks/run_all.py [--only backbone,eval] [--out benchmarks/RESULTS.md]``
(about 20-30 minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import Figure, machine_description  # noqa: E402

from siglip2_dense.files import write_text_atomic  # noqa: E402

BENCHMARKS = ("backbone", "data", "eval", "probe", "openvocab", "openvocab_protocols", "vs_transformers_recipe",
              "naflex_batching", "memory", "cpu_options", "cost_aggregation")


def run_benchmark(name: str) -> tuple[list[Figure], str, float]:
    """(figures, error text or "", seconds) of one benchmark module."""
    start = time.perf_counter()
    try:
        figures = importlib.import_module(name).run()
        return figures, "", time.perf_counter() - start
    except Exception:  # a broken benchmark must not hide the others' figures
        return [], traceback.format_exc(limit=3), time.perf_counter() - start


def gpu_section() -> str:
    import torch

    if torch.cuda.is_available():
        import gpu

        out = HERE / "gpu_results.json"
        gpu.main(["--out", str(out)])
    saved = HERE / "gpu_results.json"
    if not saved.is_file():
        return "No GPU was available when these figures were made; `python benchmarks/gpu.py` on a GPU machine " \
               "adds the table (images/s and bf16 MFU per tower, patch count and attention implementation)."
    return json.loads(saved.read_text())["table"]


def results_markdown(rows: list[tuple[str, list[Figure], str, float]], gpu_text: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Made by `python benchmarks/run_all.py` on {datetime.date.today().isoformat()}.",
        f"Machine: {machine_description()}.",
        "",
        "Every figure is a ratio of two things measured side by side in the same run (median of >= 3 repeats).",
        "Each benchmark's docstring (`benchmarks/<benchmark>.py`) says what its figures measure and, where one",
        "falls short, where the time or memory goes.",
        "",
        "| benchmark | figure | measured | target | result | detail |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures, error, seconds in rows:
        if error:
            last = error.strip().splitlines()[-1].replace("|", "/")
            lines.append(f"| {name} | (crashed after {seconds:.0f} s) | - | - | FAIL | {last} |")
        for f in figures:
            lines.append(f"| {name} | {f.name} | {f.value:.3f} | {f.target_text} | {f.verdict} | "
                         f"{f.detail.replace('|', '/')} |")
    lines += ["", "## GPU", "", gpu_text, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    rows = []
    for name in names:
        print(f"== {name}", flush=True)
        figures, error, seconds = run_benchmark(name)
        for f in figures:
            print(f.line(), flush=True)
        if error:
            print(error, flush=True)
        rows.append((name, figures, error, seconds))
    write_text_atomic(Path(args.out), results_markdown(rows, gpu_section()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
