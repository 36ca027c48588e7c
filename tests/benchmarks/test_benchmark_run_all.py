"""run_all gathers figures into RESULTS.md, including a crashed benchmark's row."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import run_all  # noqa: E402
from measure import Figure  # noqa: E402


def test_results_table_rows_and_verdicts():
    rows = [
        ("backbone", [Figure("speed", 0.99, 0.97, detail="a|b"), Figure("mem", 1.2, 1.1, higher_is_better=False)],
         "", 1.0),
        ("cpu", [Figure("compile", 0.93, 1.05, kind="option"), Figure("cl", 1.07, 1.05, kind="option"),
                 Figure("pad", 0.15, 0.1, higher_is_better=False, kind="report")], "", 1.0),
        ("eval", [], "Traceback...\nValueError: boom", 2.0),
    ]
    text = run_all.results_markdown(rows, "no GPU")
    assert "| backbone | speed | 0.990 | >= 0.97 | PASS | a/b |" in text
    assert "| backbone | mem | 1.200 | <= 1.1 | FAIL |" in text
    assert "| cpu | compile | 0.930 | >= 1.05 | NOT ADOPTED |" in text
    assert "| cpu | cl | 1.070 | >= 1.05 | ADOPTED |" in text
    assert "| cpu | pad | 0.150 | - | REPORTED |" in text
    assert "| eval | (crashed after 2 s) | - | - | FAIL | ValueError: boom |" in text
    assert text.rstrip().endswith("no GPU")


def test_a_crashing_benchmark_is_reported_not_raised(monkeypatch, tmp_path):
    def broken_run():
        raise RuntimeError("broken on purpose")

    fake = type(sys)("fake_bench")
    fake.run = broken_run
    monkeypatch.setitem(sys.modules, "fake_bench", fake)
    figures, error, _ = run_all.run_benchmark("fake_bench")
    assert figures == [] and "broken on purpose" in error


def test_unknown_benchmark_name_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope"])
    assert "unknown benchmark" in capsys.readouterr().err
