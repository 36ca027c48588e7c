"""benchmarks/cost_aggregation.py with a tiny tower and head: its rows and their verdicts, not timings."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cost_aggregation  # noqa: E402
import run_all  # noqa: E402


def test_tiny_run_gives_the_time_and_memory_rows():
    figures = cost_aggregation.run(tiny=True)
    few, many = cost_aggregation.TINY.timed_classes
    pad = cost_aggregation.TINY.pad_len
    names = [f.name for f in figures]
    assert names[:4] == [f"head / backbone time, {c} classes, pad_len {p}" for c in (few, many) for p in (pad, 0)]
    assert names[4].startswith(f"head peak memory {many} / {few} classes (pad_len 0)")
    assert len(figures) == 5
    assert all(f.kind == "report" and f.value > 0 for f in figures[:4])
    assert "top 8 of 20 classes" in figures[2].detail and "all 20 classes aggregated" in figures[3].detail
    memory = figures[4]
    assert memory.kind == "target" and not memory.higher_is_better
    assert memory.target == round(many / few * 1.1, 2) and memory.verdict in ("PASS", "FAIL")


def test_listed_in_run_all():
    assert "cost_aggregation" in run_all.BENCHMARKS
