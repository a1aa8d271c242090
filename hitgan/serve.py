"""``hitgan serve``: a local web page to explore one generator, and the HTTP API behind it.

The standard library's ``ThreadingHTTPServer`` answers every request in its own thread, so the
page and the API never wait behind a slow client. The generator itself runs in one worker thread
(``Renderer``): requests that arrive while it is busy wait in a queue, and the worker takes all
of them at once as one batch. One thread owns the model, so a compiled forward is never entered
twice, and a batch of several requests costs little more than one on a CPU.

Routes (GET only; every other path is 404, and nothing in a request names a file):

- ``/``: the page, ``hitgan/web/sampler.html``, one static file of HTML and JavaScript;
- ``/api/info``: JSON describing the model and the limits below;
- ``/api/grid?start=S&count=N[&trunc=T]``: seeds S..S+N-1 as one PNG grid (``X-Grid-Columns``
  gives its columns; 2 px between images);
- ``/api/image?seed=S[&trunc=T]``: one image, a PNG at the model's resolution;
- ``/api/interpolation?from=A&to=B&frames=F[&trunc=T]``: F frames of the slerp from seed A to
  seed B, in one row.

For a class-conditional generator every image route also takes ``class=K`` (0..K-1, required;
``/api/info`` lists ``class_names``), as ``hitgan generate --class K``; the page shows a class
picker. A bad request gets a 4xx status and ``{"error": "..."}`` naming the parameter and its
range. Seeds and truncation mean what they mean in ``hitgan generate`` (``hitgan/sampling.py``).

``serving_precision`` and ``device_forward`` set the generator up for serving: the precision
(``auto``: bf16 where the device multiplies it natively), inputs moved to its device, and with
``compile`` the compiled forward built before the first request arrives.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

from hitgan.data.images import make_grid, png_bytes, to_uint8
from hitgan.models.generator import HiTGenerator
from hitgan.runtime import fast_bf16
from hitgan.sampling import (
    INFERENCE_PRECISIONS,
    inference_fn,
    interpolation_path,
    seed_latent,
    seed_latents,
)

log = logging.getLogger(__name__)

PAGE = Path(__file__).parent / "web" / "sampler.html"
MAX_SEED = 2**32 - 1
MAX_IMAGES = 64  # per grid request
MAX_FRAMES = 32  # per interpolation request
MAX_TRUNC = 10.0
GRID_PAD = 2
SERVE_PRECISIONS = ("auto", *INFERENCE_PRECISIONS)  # hitgan serve --precision


def serving_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """``precision`` (one of ``SERVE_PRECISIONS``) -> the one to serve in, and for ``auto``
    why: bf16 where ``device`` multiplies bf16 natively (``fast_bf16``), else fp32."""
    if precision != "auto":
        return precision, None
    bf16, found = fast_bf16(device)
    return ("bf16" if bf16 else "fp32"), found


def device_forward(generator: HiTGenerator, device: torch.device, precision: str = "fp32",
                   compile: bool = False) -> Callable[..., torch.Tensor]:
    """The forward the server calls: latents (and labels) from the CPU onto ``device``,
    ``generator`` (already there) in ``precision`` (``inference_fn``). With ``compile`` it is
    compiled here, for one image and for a batch, rather than in the first requests."""
    on_device = inference_fn(generator, precision, compile, device)
    if compile:
        config = generator.config
        with torch.inference_mode():
            for n in (1, 2):
                on_device(torch.zeros(n, config.latent_dim),
                          torch.zeros(n, dtype=torch.long) if config.num_classes else None)
    return on_device


class BadRequest(ValueError):
    """A request the server refuses, with the status to answer it with."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    z: torch.Tensor  # (N, latent_dim)
    labels: torch.Tensor | None = None  # (N,) classes of a conditional generator
    done: threading.Event = field(default_factory=threading.Event)
    images: np.ndarray | None = None  # (N, H, W, C) uint8
    error: BaseException | None = None


class Renderer:
    """Latents (and labels) -> uint8 images through one worker thread that batches waiting
    requests. ``forward(z)``, or ``forward(z, labels)`` for a conditional generator."""

    def __init__(self, forward: Callable[..., torch.Tensor], max_batch: int):
        self.forward, self.max_batch = forward, max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="hitgan-renderer", daemon=True)
        self._worker.start()

    def render(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> np.ndarray:
        """(N, D) latents and (N,) labels (conditional) -> (N, H, W, C) uint8; blocks this
        thread only."""
        job = _Job(z, labels)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.images is not None
        return job.images

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()

    def _work(self) -> None:
        pending: _Job | None = None  # taken from the queue, too big for the last batch
        while True:
            job = pending if pending is not None else self._queue.get()
            if job is None:
                return
            jobs, n, pending = [job], len(job.z), None
            while n < self.max_batch:  # add the requests that are waiting now
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._run(jobs)
                    return
                if n + len(job.z) > self.max_batch:
                    pending = job
                    break
                jobs.append(job)
                n += len(job.z)
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            z = torch.cat([j.z for j in jobs])  # (N, D)
            with torch.inference_mode():
                if jobs[0].labels is None:
                    images = to_uint8(self.forward(z))
                else:
                    labels = torch.cat([j.labels for j in jobs if j.labels is not None])
                    images = to_uint8(self.forward(z, labels))
        except Exception as e:  # answered to each waiting request as a 500
            log.exception("generator failed on a batch of %d requests", len(jobs))
            for j in jobs:
                j.error = e
        else:
            start = 0
            for j in jobs:
                j.images = images[start:start + len(j.z)]
                start += len(j.z)
        for j in jobs:
            j.done.set()


def _params(query: dict[str, list[str]], required: tuple[str, ...],
            optional: tuple[str, ...] = ("trunc",)) -> dict[str, str]:
    """One value per parameter; unknown, missing or repeated ones are refused."""
    known = required + optional
    for name, values in query.items():
        if name not in known:
            raise BadRequest(f"unknown parameter {name!r}; this route takes {', '.join(known)}")
        if len(values) > 1:
            raise BadRequest(f"parameter {name!r} given {len(values)} times; give it once")
    for name in required:
        if name not in query:
            raise BadRequest(f"missing parameter {name!r}; this route takes {', '.join(known)}")
    return {name: values[0] for name, values in query.items()}


def _int(params: dict[str, str], name: str, lo: int, hi: int) -> int:
    text = params[name]
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name}={text[:40]!r}: not an integer; use {lo}..{hi}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}={value}: out of range; use {lo}..{hi}")
    return value


MIN_TRUNC = 0.05  # below this, redrawing latent entries until all are inside takes too long


def _trunc(params: dict[str, str]) -> float | None:
    """The truncation threshold; absent or empty means untruncated."""
    text = params.get("trunc", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"trunc={text[:40]!r}: not a number; use {MIN_TRUNC}..{MAX_TRUNC} "
                         "or leave it out for untruncated latents") from None
    if not MIN_TRUNC <= value <= MAX_TRUNC:  # also refuses nan
        raise BadRequest(f"trunc={value}: out of range; use {MIN_TRUNC}..{MAX_TRUNC} or leave "
                         "it out for untruncated latents")
    return value


Answer = tuple[str, bytes, dict[str, str]]  # content type, body, extra headers


class Sampler:
    """The routes' answers, apart from HTTP: a path and its query -> an ``Answer``.
    ``num_classes`` > 0: a conditional generator, ``forward(z, labels)``; the image routes
    then take ``class``."""

    def __init__(self, forward: Callable[..., torch.Tensor], latent_dim: int,
                 info: dict[str, Any], num_classes: int = 0, class_names: Sequence[str] = ()):
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.renderer = Renderer(forward, max_batch=MAX_IMAGES)
        self.info = {**info, "latent_dim": latent_dim, "max_seed": MAX_SEED,
                     "max_images": MAX_IMAGES, "max_frames": MAX_FRAMES,
                     "trunc_range": [MIN_TRUNC, MAX_TRUNC], "num_classes": num_classes,
                     "class_names": list(class_names) or [str(k) for k in range(num_classes)]}
        self.page = PAGE.read_bytes()
        self.routes: dict[str, Callable[[dict[str, list[str]]], Answer]] = {
            "/": self._page, "/api/info": self._info, "/api/grid": self._grid,
            "/api/image": self._image, "/api/interpolation": self._interpolation}

    def answer(self, path: str, query: dict[str, list[str]]) -> Answer:
        route = self.routes.get(path)
        if route is None:
            raise BadRequest(f"no such page {path[:80]!r}; the page is / and the API is "
                             f"{', '.join(r for r in self.routes if r != '/')}",
                             HTTPStatus.NOT_FOUND)
        return route(query)

    def _page(self, query: dict[str, list[str]]) -> Answer:
        _params(query, (), ())
        return "text/html; charset=utf-8", self.page, {}

    def _info(self, query: dict[str, list[str]]) -> Answer:
        _params(query, (), ())
        return "application/json", json.dumps(self.info).encode(), {}

    def _images(self, query: dict[str, list[str]], required: tuple[str, ...]
                 ) -> tuple[dict[str, str], Callable[[torch.Tensor], np.ndarray]]:
        """An image route's parameters, and the renderer of its latents: with the requested
        class for a conditional generator."""
        if not self.num_classes:
            if "class" in query:
                raise BadRequest("class: this generator is unconditional; leave class out")
            return _params(query, required), self.renderer.render
        params = _params(query, (*required, "class"))
        k = _int(params, "class", 0, self.num_classes - 1)
        return params, lambda z: self.renderer.render(z, torch.full((len(z),), k))

    def _grid(self, query: dict[str, list[str]]) -> Answer:
        params, render = self._images(query, ("start", "count"))
        count = _int(params, "count", 1, MAX_IMAGES)
        start = _int(params, "start", 0, MAX_SEED - count + 1)
        images = render(seed_latents(range(start, start + count), self.latent_dim,
                                     _trunc(params)))
        cols = int(np.ceil(np.sqrt(count)))
        return "image/png", png_bytes(make_grid(images, cols, GRID_PAD)), {
            "X-Grid-Columns": str(cols)}

    def _image(self, query: dict[str, list[str]]) -> Answer:
        params, render = self._images(query, ("seed",))
        z = seed_latent(_int(params, "seed", 0, MAX_SEED), self.latent_dim, _trunc(params))
        return "image/png", png_bytes(render(z[None])[0]), {}

    def _interpolation(self, query: dict[str, list[str]]) -> Answer:
        params, render = self._images(query, ("from", "to", "frames"))
        seeds = [_int(params, "from", 0, MAX_SEED), _int(params, "to", 0, MAX_SEED)]
        frames = _int(params, "frames", 2, MAX_FRAMES)
        path = interpolation_path(seed_latents(seeds, self.latent_dim, _trunc(params)), frames)
        return "image/png", png_bytes(make_grid(render(path), frames, GRID_PAD)), {}


class _Handler(BaseHTTPRequestHandler):
    server: SamplerServer
    server_version = "hitgan"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            query = parse_qs(url.query, keep_blank_values=True, max_num_fields=8)
            ctype, body, headers = self.server.sampler.answer(url.path, query)
            status = HTTPStatus.OK
        except BadRequest as e:
            status, ctype, body, headers = e.status, *_error(str(e))
        except ValueError as e:  # parse_qs: too many fields
            status, ctype, body, headers = HTTPStatus.BAD_REQUEST, *_error(str(e))
        except Exception as e:
            log.exception("GET %s failed", self.path[:200])
            status, ctype, body, headers = HTTPStatus.INTERNAL_SERVER_ERROR, *_error(
                f"the generator failed: {type(e).__name__}: {e}")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self) -> None:
        ctype, body, _ = _error(f"{self.command} is not allowed; use GET")
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s " + format, self.address_string(), *args)


def _error(message: str) -> Answer:
    return "application/json", json.dumps({"error": message}).encode(), {}


class SamplerServer(ThreadingHTTPServer):
    """A thread per request; the generator's worker thread is ``sampler.renderer``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sampler: Sampler):
        super().__init__(address, _Handler)
        self.sampler = sampler

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.sampler.renderer.close()
