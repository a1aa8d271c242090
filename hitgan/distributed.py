"""torchrun from the environment: this process's device, its rank, and the process group.

``hitgan train`` and ``hitgan eval`` run as one process unless torchrun launched them
(WORLD_SIZE > 1); then each process takes its LOCAL_RANK's GPU and joins the group with nccl, or
stays on the CPU with gloo. Training's own collectives (gradient averaging, lost peers, the step
sampler) are in hitgan/training/distributed.py; evaluation's sharding in hitgan/metrics/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launched_world() -> int:
    """The process count torchrun launched (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def local_device(device: str | None = None) -> torch.device:
    """This process's device. A single process takes ``device`` (e.g. ``cpu``, ``cuda:1``) as
    given; under torchrun only its type counts: each process takes its LOCAL_RANK's GPU, or the
    CPU. Default: the GPU if there is one."""
    chosen = None
    if device is not None:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise ValueError(f"--device {device}: not a device; use e.g. cpu, cuda or "
                             "cuda:1") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device here; use cpu")
        if _launched_world() == 1:
            return chosen
    kind = chosen.type if chosen else ("cuda" if torch.cuda.is_available() else "cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local) if kind == "cuda" else torch.device(kind)


def rank_and_world() -> tuple[int, int]:
    """(rank, process count) of the joined process group; (0, 1) outside one."""
    if _joined():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str | None = None) -> DistInfo:
    """This process's ``DistInfo``; under torchrun (WORLD_SIZE > 1) it first joins the process
    group (nccl on GPU, gloo on CPU) unless it has joined one already. ``device``: as
    ``local_device``."""
    dev = local_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    if _launched_world() == 1:
        return DistInfo(device=dev)
    if not _joined():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), device=dev)


@contextmanager
def distributed(device: str | None = None) -> Iterator[DistInfo]:
    """``init_distributed`` for the block; the process group it joined is left at the end,
    whatever ends the block."""
    joined_before = _joined()
    info = init_distributed(device)
    try:
        yield info
    finally:
        if _joined() and not joined_before:
            dist.destroy_process_group()
