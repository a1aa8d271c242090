"""Training under torchrun: gradient averaging, lost peers, and a sampler that gives every
process its share of each global batch. The process group itself is hitgan/distributed.py's.

Gradients are averaged by hand after backward (as StyleGAN2-ADA does) rather than through a
DistributedDataParallel wrapper: the discriminator runs several forwards per step and R1 needs a
double backward, which DDP's one-forward-one-backward bookkeeping does not allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

# Re-exported for the imports of training/loop.py, bench/ and tests/test_train_loop.py; new code
# imports them from hitgan.distributed.


class PeerLost(RuntimeError):
    """A collective failed because another process of the run died or cannot be reached."""


PEER_FAILURE_WORDS = ("gloo", "nccl", "connection", "peer", "timed out", "timeout")


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is how a collective reports a dead or unreachable peer: gloo raises a
    plain RuntimeError ("... Connection reset by peer"), newer backends a ``DistError``."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(
        w in str(error).lower() for w in PEER_FAILURE_WORDS)


def broadcast_module(module: nn.Module) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    if dist.is_initialized():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[nn.Parameter], world: int) -> None:
    """All-reduce and average .grad of ``params`` in one flat buffer."""
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def any_process(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any process."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


class StepSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches of (index, epoch) for one process, from a stream of epoch permutations.

    The run reads the stream in global batches of ``batch`` images. Within global batch ``s``,
    micro-batch ``a`` of process ``r`` is stream positions s*batch + (a*world + r)*micro
    + [0, micro). Epoch e is a permutation seeded by (seed, e). Starting at ``start_step``
    resumes exactly where a run stopped, whatever the process count.
    """

    def __init__(self, size: int, batch: int, micro: int, rank: int, world: int, seed: int,
                 start_step: int = 0, shuffle: bool = True):
        self.size, self.batch, self.micro = size, batch, micro
        self.rank, self.world, self.seed = rank, world, seed
        self.start_step, self.shuffle = start_step, shuffle
        self._perm_epoch, self._perm = -1, np.arange(0)

    def _at(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.size)
        if epoch != self._perm_epoch:
            self._perm_epoch = epoch
            self._perm = (np.random.default_rng((self.seed, epoch)).permutation(self.size)
                          if self.shuffle else np.arange(self.size))
        return int(self._perm[offset]), epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        accum = self.batch // (self.micro * self.world)
        step = self.start_step
        while True:
            for a in range(accum):
                first = step * self.batch + (a * self.world + self.rank) * self.micro
                yield [self._at(first + k) for k in range(self.micro)]
            step += 1
