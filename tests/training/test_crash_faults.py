"""Crash faults: SIGKILL at random moments of training, in the middle of writing a checkpoint or the best
model, during evaluation, and of one DDP worker. After each, rerunning (training: resuming) must end
exactly where an uninterrupted run ends, and a dead DDP worker must stop the run, not hang it.

The training runs reuse tests/test_train.py's configuration and its uninterrupted reference run
(``reference_run``); tests/training/paused_training.py stops a run at a chosen point of a write.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_train import LINEAR, ROOT, ade_root, overrides, reference_run, train_records  # noqa: F401 (fixtures)

from siglip2_dense import DenseModel, load_backbone
from siglip2_dense.config import load_config
from siglip2_dense.data import write_synthetic
from siglip2_dense.heads import build_head
from siglip2_dense.training.checkpoint import latest_checkpoint, list_checkpoints
from siglip2_dense.training.engine import read_log, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FINAL = "step_00000012"
START_TIMEOUT_S = 180


def start_training(args: list[str], pause_point: str | None = None, marker: Path | None = None) -> subprocess.Popen:
    """tools/train.py --resume (or tests/training/paused_training.py) in a fresh process."""
    if pause_point is None:
        command = [sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(LINEAR), "--resume", *args]
    else:
        command = [sys.executable, str(ROOT / "tests" / "training" / "paused_training.py"), pause_point, str(marker),
                   "--config", str(LINEAR), *args]
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, ready, delay_s: float = 0.0, timeout_s: float = START_TIMEOUT_S) -> None:
    """SIGKILL ``process`` ``delay_s`` after ``ready()`` turns true; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before the kill point: "
                                 f"{process.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.005)
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def assert_same_final_state(out: Path, reference_out: Path) -> None:
    """Final weights and optimizer state bit-identical to the reference; the same losses; the same best."""
    for name in ("model.safetensors", "optimizer.safetensors"):
        got = load_file(str(out / "checkpoints" / FINAL / name))
        want = load_file(str(reference_out / "checkpoints" / FINAL / name))
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[key], want[key]) for key in want), name
    assert [r["loss"] for r in train_records(out)] == [r["loss"] for r in train_records(reference_out)]
    assert json.loads((out / "best" / "metrics.json").read_text()) == json.loads(
        (reference_out / "best" / "metrics.json").read_text())
    got_head = load_file(str(out / "best" / "head.safetensors"))
    want_head = load_file(str(reference_out / "best" / "head.safetensors"))
    assert all(torch.equal(got_head[key], want_head[key]) for key in want_head)


def assert_no_leftovers(out: Path) -> None:
    """Only complete checkpoints remain (keep_checkpoints=1: the last), and no temporary or moved-aside folder."""
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [FINAL]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def resume_to_the_end(args: list[str]) -> None:
    train(load_config(LINEAR, [*args, "train.resume=auto"]))


# --- killed at random moments, several times in one run --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_killed_at_random_steps_several_times_then_resumed_ends_identical(
        reference_run, tiny_naflex_dir, ade_root, tmp_path, seed):  # noqa: F811 (fixtures from test_train)
    _, reference_out, _ = reference_run
    out = tmp_path / "run"
    args = overrides(tiny_naflex_dir, ade_root, out)
    rng = random.Random(seed)
    kill_steps = [rng.randint(1, 3), rng.randint(5, 7), rng.randint(9, 11)]  # one per checkpoint interval
    for attempt, step in enumerate(kill_steps, start=1):
        process = start_training(args)

        def reached(step: int = step, attempt: int = attempt) -> bool:
            if not (out / "log.jsonl").is_file():
                return False
            records = list(read_log(out / "log.jsonl"))
            started = sum(1 for r in records if r.get("event") == "start") == attempt  # this process's log
            return started and max((r["step"] for r in records if "loss" in r), default=0) >= step

        kill_when(process, reached, delay_s=rng.uniform(0.0, 0.05))  # the kill lands anywhere in the next step
    killed_at = latest_checkpoint(out)
    assert killed_at is not None and killed_at.name == "step_00000008"
    resume_to_the_end(args)
    assert_same_final_state(out, reference_out)
    starts = [r for r in read_log(out / "log.jsonl") if r.get("event") == "start"]
    assert [s["resumed_from"] is not None for s in starts] == [False, False, True, True]  # kill 1 came before step 4
    assert_no_leftovers(out)


# --- killed in the middle of writing a checkpoint or the best model -----------------------------


WRITE_POINTS = [
    # (pause point, the newest complete checkpoint right after the kill)
    pytest.param("before_rename", "step_00000004", id="before_rename"),
    pytest.param("model_written", "step_00000004", id="model_written", marks=pytest.mark.slow),
    pytest.param("deleting_previous", "step_00000008", id="deleting_previous", marks=pytest.mark.slow),
    pytest.param("best_moved_aside", "step_00000008", id="best_moved_aside", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point, newest_after_kill", WRITE_POINTS)
def test_killed_while_writing_then_resumed_ends_identical(
        reference_run, tiny_naflex_dir, ade_root, tmp_path, point, newest_after_kill):  # noqa: F811
    _, reference_out, _ = reference_run
    if point == "best_moved_aside":  # the pause needs a second, better validation to swap best/ for
        validations = [r for r in read_log(reference_out / "log.jsonl") if "metrics" in r]
        assert [v["best"]["step"] for v in validations] == [6, 12]
    out, marker = tmp_path / "run", tmp_path / "paused"
    args = overrides(tiny_naflex_dir, ade_root, out)
    kill_when(start_training(args, point, marker), marker.is_file)

    assert latest_checkpoint(out).name == newest_after_kill  # the previous checkpoint is intact and found
    leftovers = sorted(p.name for p in (out / "checkpoints").iterdir())
    if point == "deleting_previous":
        assert leftovers == ["step_00000004", "step_00000008"]
        assert [p.name for p in list_checkpoints(out)] == ["step_00000008"]  # the half-deleted one is ignored
    if point == "best_moved_aside":
        assert not (out / "best").exists() and (out / ".best.old" / "head.safetensors").is_file()
    resume_to_the_end(args)
    assert_same_final_state(out, reference_out)
    assert_no_leftovers(out)
    DenseModel.from_pretrained(out / "best")  # loads


# --- evaluation killed and rerun ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_setup(tiny_naflex_dir, tmp_path_factory):
    root = write_synthetic("ade20k", tmp_path_factory.mktemp("eval-data"), num=48, seed=5, size=(64, 96))
    torch.manual_seed(0)
    backbone = load_backbone(str(tiny_naflex_dir))
    model = DenseModel(backbone, build_head("linear", in_channels=backbone.out_channels, num_classes=17))
    return root, model.save_pretrained(tmp_path_factory.mktemp("eval-model"))


def eval_arguments(root: Path, checkpoint: Path, out: Path) -> list[str]:
    return ["--config", str(LINEAR), "--checkpoint", str(checkpoint), "--out", str(out / "metrics"),
            "--show-dir", str(out / "pictures"), "--no-progress", f"data.root={root}"]


def load_eval_tool():
    spec = importlib.util.spec_from_file_location("crash_faults_eval_tool", ROOT / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluation_killed_and_rerun_writes_identical_metrics(eval_setup, tmp_path):
    root, checkpoint = eval_setup
    eval_tool = load_eval_tool()
    assert eval_tool.main(eval_arguments(root, checkpoint, tmp_path / "whole")) == 0
    expected = (tmp_path / "whole" / "metrics" / "metrics.json").read_bytes()
    num_pictures = len(list((tmp_path / "whole" / "pictures").iterdir()))
    assert num_pictures == 12

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "eval.py"), *eval_arguments(root, checkpoint, out)],
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_at = random.Random(7).randint(1, num_pictures - 2)
    pictures = out / "pictures"
    kill_when(process, lambda: pictures.is_dir() and len([p for p in pictures.iterdir() if p.suffix == ".png"]) >= kill_at)
    assert not (out / "metrics" / "metrics.json").exists()

    assert eval_tool.main(eval_arguments(root, checkpoint, out)) == 0
    assert (out / "metrics" / "metrics.json").read_bytes() == expected
    written = sorted(p.name for p in pictures.iterdir())
    assert written == sorted(p.name for p in (tmp_path / "whole" / "pictures").iterdir())  # no temporary files
    for name in written:  # each complete, none half-written by the killed run
        assert np.array_equal(np.asarray(Image.open(pictures / name)),
                              np.asarray(Image.open(tmp_path / "whole" / "pictures" / name)))


# --- a DDP worker killed -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_ddp_worker_stops_the_run_with_a_clear_message(tiny_naflex_dir, ade_root, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    args = overrides(tiny_naflex_dir, ade_root, out, ["train.iterations=100000", "train.val_every=0",
                                                      "train.checkpoint_every=0"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tools" / "train.py"), "--config", str(LINEAR), *args]
    torchrun = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ((out / "log.jsonl").is_file() and len(train_records(out)) >= 3):
        assert torchrun.poll() is None and time.monotonic() < deadline, "the DDP run did not start"
        time.sleep(0.05)
    workers = sorted(int(pid) for pid in subprocess.run(["pgrep", "-P", str(torchrun.pid)], capture_output=True,
                                                        text=True).stdout.split())
    assert len(workers) == 2
    killed = workers[1]
    os.kill(killed, signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        output, _ = torchrun.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        torchrun.kill()
        raise AssertionError("the run hung after a worker was killed") from None
    elapsed = time.monotonic() - killed_at
    assert torchrun.returncode != 0 and elapsed < 60
    assert f"Signal 9 (SIGKILL) received by PID {killed}" in output  # torchrun names the dead worker
    assert "internal error" not in output  # the survivor does not call it a bug
    # the survivor's own line, when torchrun's SIGTERM lets it print one (a progress bar may precede it)
    survivor_errors = [line.split("error: ", 1)[1] for line in output.splitlines() if "error: " in line]
    assert all(error.startswith("process 0 of 2 lost contact with the others") for error in survivor_errors), \
        survivor_errors
    print(f"torchrun stopped {elapsed:.1f} s after the kill, exit code {torchrun.returncode}")
