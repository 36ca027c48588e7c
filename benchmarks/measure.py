"""What every benchmark shares: timing by median of repeats, figures as rows, the machine.

Each benchmark script exposes ``run() -> list[Figure]`` and prints its figures when run alone;
``benchmarks/run_all.py`` gathers them into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Figure:
    """One measured ratio: ``value`` compared with ``target`` in the direction ``higher_is_better``.

    ``kind``: ``"target"`` (a goal: PASS / FAIL), ``"option"`` (a speed-up tried: ``target`` is the
    bar for adopting it, ADOPTED / NOT ADOPTED) or ``"report"`` (measured for the record; no verdict).
    """

    name: str
    value: float
    target: float
    higher_is_better: bool = True
    detail: str = ""
    kind: str = "target"

    @property
    def passed(self) -> bool:
        """Whether the target is met (always True for ``"report"`` figures, which have no goal)."""
        if self.kind == "report":
            return True
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def verdict(self) -> str:
        if self.kind == "report":
            return "REPORTED"
        if self.kind == "option":
            return "ADOPTED" if self.passed else "NOT ADOPTED"
        return "PASS" if self.passed else "FAIL"

    @property
    def target_text(self) -> str:
        if self.kind == "report":
            return "-"
        return f"{'>=' if self.higher_is_better else '<='} {self.target}"

    def line(self) -> str:
        return f"{self.name}: {self.value:.3f} (target {self.target_text}) {self.verdict}  {self.detail}".rstrip()


def seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(
    fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Median times of several functions measured in alternation, so drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """Float32 matrix-product FLOP/s on this machine: median of ``size``-square products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    elapsed = seconds(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return 2 * size**3 / elapsed


def matmul_workload(size: int = 2048, count: int = 4) -> tuple[Callable[[], object], int]:
    """A float32 peak workload to interleave with a model run: (fn, FLOPs per call)."""
    a, b = torch.randn(size, size), torch.randn(size, size)

    def fn() -> None:
        for _ in range(count):
            torch.mm(a, b)

    return fn, 2 * size**3 * count


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    import transformers

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads"
    )


def print_figures(title: str, figures: list[Figure]) -> None:
    print(f"== {title} ({machine_description()})")
    for figure in figures:
        print(figure.line())


# --- resident memory (Linux): what memory.py and cost_aggregation.py sample around one call ------------------
def resident() -> int:
    """Bytes of this process's resident memory (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settle() -> int:
    """Collect garbage and return freed heap to the system (glibc ``malloc_trim``); the resident size after."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return resident()


def transient_peak(fn: Callable[[], object]) -> tuple[int, int]:
    """``(resident before, highest resident during)`` ``fn()``, sampled every 0.5 ms by a thread. Run with
    ``MALLOC_MMAP_THRESHOLD_`` fixed so large tensors get their own mappings and the figure follows them."""
    before = settle()
    peak, running = [before], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], resident())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        running[0] = False
        sampler.join()
    return before, max(peak[0], resident())

