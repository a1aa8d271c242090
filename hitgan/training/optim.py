"""Adam as the official trainer's Keras Adam computes it.

Keras (tf.keras.optimizers.Adam, epsilon 1e-7) adds epsilon to sqrt(v) before the bias correction:
    w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + epsilon)
torch adds it after: w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
The two agree when torch's eps at step t is epsilon / sqrt(1 - beta2^t): 1e-6 at the first step
with beta2 0.99, falling to 1e-7 after a few hundred steps (torch's default, 1e-8, is 100x smaller
at the start). Gradients far below the epsilon take steps smaller than lr, so the difference
shows for parameters whose gradient is near zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

KERAS_EPSILON = 1e-7


def _keras_epsilon(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook: set each group's eps for the step about to be taken."""
    for group in opt.param_groups:
        state = next((opt.state[p] for p in group["params"] if p in opt.state), None)
        t = 1 if state is None else int(state["step"]) + 1
        group["eps"] = KERAS_EPSILON / math.sqrt(1 - group["betas"][1] ** t)


def official_adam(params: Iterable[torch.nn.Parameter], lr: float,
                  betas: tuple[float, float]) -> torch.optim.Adam:
    opt = torch.optim.Adam(params, lr, betas=betas, eps=KERAS_EPSILON)
    opt.register_step_pre_hook(_keras_epsilon)
    return opt
