"""The official TF implementation (google-research/hit-gan) in a worker process.

Neither TensorFlow nor the official code is a hitgan dependency: the worker
(``bench/tf_worker.py``) runs under the Python of a separate TF install, given with
``--tf-python``, with the checkout given with ``--official`` on its path. It answers one JSON
request per stdin line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
from pathlib import Path

WORKER = Path(__file__).with_name("tf_worker.py")
OFFICIAL_SIZES = (128, 256, 1024)  # output sizes the official HiTGenerator accepts


class OfficialWorker:
    """The official TF models in a subprocess of the TF interpreter."""

    def __init__(self, tf_python: str, official: str, threads: int, workdir: str,
                 malloc_cache: bool = False):
        self._stderr = open(Path(workdir) / "official_worker.stderr", "w+")  # noqa: SIM115
        cmd = [tf_python, str(WORKER), official, str(threads), "1" if malloc_cache else "0"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True)
        self.info = self._read()

    def describe(self, threads: int) -> str:
        return (f"{self.info['tf']} (intra-op threads {threads}, inter-op 1, oneDNN opts "
                f"{self.info['onednn_opts']}, malloc caching "
                f"{'on' if self.info.get('malloc_cache') else 'off'})")

    def _read(self) -> dict:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("@@"):
                reply = json.loads(line[2:])
                if "error" in reply:
                    raise RuntimeError(f"official TF worker: {reply['error']}")
                return reply
        self._stderr.seek(0)
        tail = self._stderr.read()[-3000:]
        raise RuntimeError(f"official TF worker ({self._proc.args[0]}) exited:\n{tail}")

    def request(self, **req: object) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._stderr.close()


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--official", help="root of a google-research/hit-gan checkout (optional)")
    p.add_argument("--tf-python", help="python of a venv with tensorflow-cpu and tf-keras")


def check_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.official is None) != (args.tf_python is None):
        p.error("--official and --tf-python go together")
    if args.official and not (Path(args.official) / "models" / "generators.py").is_file():
        p.error(f"--official {args.official}: no models/generators.py there; give the root of "
                "a google-research/hit-gan checkout")
    if args.tf_python and not Path(args.tf_python).is_file():
        p.error(f"--tf-python {args.tf_python}: no such file")
