"""The documented multi-process commands, end to end, as README.md writes them: torchrun on
CPU/gloo with 2 processes (one node, and two "nodes" on loopback), samples, checkpoints and
periodic FID all firing, gradient accumulation, a resume with another process count, and a rank
killed with SIGKILL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from hitgan.training import checkpoint
from hitgan.training.config import build_config
from hitgan.training.loop import Trainer

pytestmark = pytest.mark.slow  # torchrun launches processes that each start torch

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
README_COMMAND = ("torchrun --nproc_per_node=2 -m hitgan train --data mnist --preset hit-tiny-32 "
                  "--out runs/ddp --steps 3 --batch 8 --norm syncbatch --workers 0")
DEADLINE = 300  # seconds: a hung run fails the test instead of hanging CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    # torchrun reads PET_<OPTION>: a free rendezvous port, so the command line stays as written
    return {**os.environ, "PET_MASTER_PORT": str(_free_port())}


def _torchrun(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    argv = [TORCHRUN if argv[0] == "torchrun" else argv[0], *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=DEADLINE)


def _digits(folder: Path, n: int = 16) -> Path:
    """A small image folder: its reference statistics for FID take seconds, not minutes."""
    folder.mkdir()
    for i in range(n):
        arr = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(i)) * 255
        Image.fromarray(arr.to(torch.uint8).numpy()).save(folder / f"{i}.png")
    return folder


def _steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1])
                  for p in checkpoint.checkpoint_dir(run).glob("step-*"))


@pytest.mark.parametrize("extra", [[], ["--sample-every", "1"]], ids=["readme", "sample-every-1"])
def test_readme_command_finishes(tmp_path, extra):
    proc = _torchrun(README_COMMAND.split() + extra, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    assert _steps(run) == [3]
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == (["step-00000001.png", "step-00000002.png", "step-00000003.png"]
                       if extra else ["step-00000003.png"])
    assert proc.stdout.count("done: step 3") == 1  # the main process alone reports


def test_sampling_checkpoints_fid_accumulation_then_resume_with_one_process(tmp_path):
    data = _digits(tmp_path / "digits")
    run = tmp_path / "run"
    train = ["-m", "hitgan", "train", "--data", str(data), "--out", str(run), "--batch", "8",
             "--batch-per-device", "2", "--norm", "syncbatch", "--workers", "0",
             "--sample-every", "1", "--checkpoint-every", "2", "--eval-every", "2",
             "--eval-samples", "8", "--log-every", "1"]
    proc = _torchrun(["torchrun", "--nproc_per_node=2", *train, "--steps", "4"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "config.json").read_text())
    assert record["world"] == 2 and record["train"]["batch_per_device"] == 2  # 2 micro-batches
    assert len(list((run / "samples").iterdir())) == 4
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4] and all(m["world_size"] == 2 for m in metrics)
    assert _steps(run)[-1] == 4
    # the same run, continued by one process
    proc = subprocess.run([sys.executable, *train, "--steps", "6", "--resume", "auto"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "saved with 2 processes, now 1" in proc.stderr
    assert _steps(run)[-1] == 6
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_two_nodes_on_loopback(tmp_path):
    endpoint = f"127.0.0.1:{_free_port()}"
    command = ["torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-endpoint", endpoint,
               "-m", "hitgan", "train", "--data", "mnist", "--out", str(tmp_path / "run"),
               "--steps", "3", "--batch", "8", "--norm", "syncbatch", "--workers", "0",
               "--sample-every", "2"]
    nodes = [subprocess.Popen([TORCHRUN, *command[1:3], "--node_rank", str(rank),
                               *command[3:]], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=DEADLINE) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["world"] == 2
    assert _steps(run) == [3]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-00000002.png", "step-00000003.png"]


def _workers(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    found = {}
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(pid)
    return found


def test_a_killed_rank_ends_the_run_with_a_valid_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [TORCHRUN, "--nproc_per_node=2", "-m", "hitgan", "train", "--data", "mnist", "--out",
         str(run), "--steps", "100000", "--batch", "4", "--workers", "0",
         "--checkpoint-every", "1", "--sample-every", "100000", "--keep-checkpoints", "2"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while checkpoint.latest_valid(run) is None:  # wait for the first checkpoint
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within the deadline"
            time.sleep(0.1)
        workers = _workers(proc.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # ends in bounded time, does not hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "lost contact with the others" in err and "--resume auto" in err, err[-3000:]
    path, _ = checkpoint.latest_valid(run)
    resumed = Trainer(build_config({"data": "mnist", "out": str(run), "batch": 4, "workers": 0,
                                    "steps": 100000, "resume": "auto"}), progress=False)
    assert resumed.resumed_from == path and resumed.step == int(path.name.split("-")[1]) >= 1
