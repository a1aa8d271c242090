"""Load on ``hitgan serve``: image requests from concurrent clients; latency percentiles,
throughput, and a check of every answer.

    python -m bench.serve_load --preset hit-b-128 --requests 200 --clients 8

Starts ``hitgan serve --port 0`` (a random init of --preset, or --model; other serve options
after ``--``) and reads its address from its output. Each distinct request (``/api/image`` of
seeds 0..SEEDS-1, truncation --trunc) is fetched once alone first, for its expected body. Then
--clients threads send --requests requests between them, the seeds in turn, a new connection per
request. An answer counts as failed unless it is 200 with the expected bytes. The server runs on
the same CPU as the clients; run it on an otherwise idle machine. Results: docs/serving.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import machine_info, markdown_table

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    output: queue.Queue[str]  # the server's later output lines


@contextlib.contextmanager
def serving(serve_args: list[str], timeout: float = 300) -> Iterator[Server]:
    """``hitgan serve --port 0 SERVE_ARGS`` while the block runs; stopped by SIGINT after."""
    process = subprocess.Popen([sys.executable, "-m", "hitgan", "serve", "--port", "0",
                                *serve_args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    try:
        yield Server(process, _wait_for_url(process, lines, timeout), lines)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    """The server's output lines into ``lines`` (so its pipe never fills)."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


def _wait_for_url(process: subprocess.Popen[str], lines: queue.Queue[str],
                  timeout: float) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("serving "):
            return line.split(" on ")[-1].split()[0]
    raise RuntimeError(f"hitgan serve did not start (exit {process.poll()}): {''.join(seen)}")


def fetch(url: str, timeout: float = 120) -> tuple[int, bytes, float]:
    """GET ``url``: (status, body, seconds); status 0 when no HTTP answer came."""
    start = time.perf_counter()
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except OSError as e:
        status, body = 0, str(e).encode()
    return status, body, time.perf_counter() - start


@dataclass
class Result:
    requests: int
    clients: int
    failed: int  # not 200, or not the expected image
    p50_ms: float
    p95_ms: float
    max_ms: float
    requests_per_s: float


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``values``."""
    ranked = sorted(values)
    return ranked[max(0, min(len(ranked) - 1, round(q / 100 * len(ranked)) - 1))]


def load(url: str, requests: int, clients: int, seeds: int, trunc: float | None
         ) -> Result:
    """``requests`` image requests to the server at ``url`` from ``clients`` threads."""
    query = f"&trunc={trunc}" if trunc is not None else ""
    urls = [f"{url}api/image?seed={s}{query}" for s in range(seeds)]
    expected = [fetch(u)[1] for u in urls]
    order = [i % seeds for i in range(requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda i: fetch(urls[i]), order))
    wall = time.perf_counter() - start
    failed = sum(status != 200 or body != expected[i]
                 for i, (status, body, _) in zip(order, answers, strict=True))
    ms = [seconds * 1000 for _, _, seconds in answers]
    return Result(requests, clients, failed, percentile(ms, 50), percentile(ms, 95), max(ms),
                  requests / wall)


def main(argv: list[str] | None = None) -> Result:
    p = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="hit-b-128", help="served randomly initialised")
    p.add_argument("--model", help="serve this model instead of --preset")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seeds", type=int, default=16, help="distinct images requested")
    p.add_argument("--trunc", type=float, default=0.7)
    p.add_argument("--json", help="also write the result and machine info here")
    p.add_argument("serve_args", nargs="*", help="more `hitgan serve` options, after --")
    args = p.parse_args(argv)
    model = ["--model", args.model] if args.model else ["--preset", args.preset]
    with serving(model + args.serve_args) as server:
        result = load(server.url, args.requests, args.clients, args.seeds, args.trunc)
    info = machine_info()
    print(f"hitgan serve {' '.join(model + args.serve_args)}; {info['cpu']}, {info['cpus']} "
          f"CPUs; server and clients on the same machine")
    print(markdown_table(
        ["requests", "clients", "failed", "p50 ms", "p95 ms", "max ms", "requests/s"],
        [[result.requests, result.clients, result.failed, f"{result.p50_ms:.0f}",
          f"{result.p95_ms:.0f}", f"{result.max_ms:.0f}", f"{result.requests_per_s:.1f}"]]))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "serve": model + args.serve_args,
                                               "result": asdict(result)}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
