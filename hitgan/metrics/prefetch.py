"""Overlap: the next batches are made (decoded, generated) in a thread while the extractor runs.

PyTorch releases the GIL inside its operators, so a generator's forward or a DataLoader's
collation in the thread runs beside the Inception forward of the caller. ``inference_mode`` is
per thread, so the producer enters it itself when asked.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import TypeVar

import torch

T = TypeVar("T")


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2, inference: bool = False) -> Iterator[T]:
    """Yield ``items`` in order, produced up to ``depth`` ahead by a background thread; an
    exception of the producer is raised here. Leaving the loop early stops the producer."""
    slots: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand ``item`` over unless the consumer has left; whether it was."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.inference_mode() if inference else nullcontext():
                for item in items:
                    if not put(item):
                        return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failed(e))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
