"""The prefetch thread behind ``hitgan eval`` and ``hitgan stats``: order kept, the producer's
errors raised in the consumer, inference mode entered in the thread, an early exit stops it."""

import threading

import pytest
import torch

from hitgan.metrics.prefetch import prefetch


def test_items_arrive_in_order_from_another_thread():
    seen = []

    def items():
        for i in range(7):
            seen.append((threading.current_thread().name, torch.is_inference_mode_enabled()))
            yield i

    assert list(prefetch(items(), depth=2, inference=True)) == list(range(7))
    assert seen == [("prefetch", True)] * 7


def test_producer_errors_are_raised_and_early_exit_stops_it():
    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(failing()))
    made = []

    def endless():
        while True:
            made.append(len(made))
            yield made[-1]

    for i in prefetch(endless(), depth=1):
        if i == 3:
            break
    count = len(made)
    assert 4 <= count <= 6 and not any(t.name == "prefetch" for t in threading.enumerate())
