"""``bench/device_check.sh --dry-run``: every step of the GPU check runs on the CPU at tiny sizes
and lands in one JSON and one markdown table."""

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole script end to end
ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_json_and_table(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "device_check.json").read_text())
    assert results["dry_run"] and list(results["steps"]) == ["tests", "inference", "compile",
                                                      "train", "fid"]
    assert {name: s["status"] for name, s in results["steps"].items()} == dict.fromkeys(
        results["steps"], "ok")
    fid = results["steps"]["fid"]["data"]["rows"]
    assert [r["extractor"] for r in fid] == ["reference", "fast"]
    assert fid[1]["relative_difference"] <= 1e-4
    table = (tmp_path / "device_check.md").read_text()
    for needle in ("| inference | hit-tiny-32 batch 1 |", "| compile | hit-tiny-32 batch 1 |",
                   "| train | hit-tiny-32 batch 2 |",
                   "| fid | 4 images | fast |", "| tests | ok |"):
        assert needle in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device_check.json", "device_check.md"]


def test_a_step_out_of_time_keeps_what_it_printed():
    from bench.device_check import run_step

    step = run_step(["-c", "print('measured 1', flush=True); import threading; "
                     "threading.Event().wait()"], limit=20)  # ample for a busy machine
    assert step["status"] == "timed out after 20 s" and step["tail"] == ["measured 1"]


def test_steps_picks_some(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run",
                           "--steps", "train", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = json.loads((tmp_path / "device_check.json").read_text())["steps"]
    assert list(steps) == ["train"] and steps["train"]["status"] == "ok"
    bad = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run",
                          "--steps", "train,gpu"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--steps train,gpu: unknown gpu" in bad.stderr
