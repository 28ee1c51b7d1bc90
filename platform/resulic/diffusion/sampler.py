"""The residual DDIM sampler (RESULIC.md §3.6) without the two wasted network calls.

The official loop makes S+1 iterations and evaluates the network in each; at t = N its output
is discarded (x0 is forced to z_c) and the last iteration is an identity. Here the t = N step
is taken without the network and the identity is dropped: S-1 evaluations, same result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .schedule import ResidualSchedule

Denoiser = Callable[[Tensor, int], Tensor]  # (z_t, t) -> predicted eps (guidance applied)
# (schedule, denoise, z_c, noise, num_steps, generator=...) -> z_0, e.g. residual_ddim_sample
Sampler = Callable[..., Tensor]


class CallCounter:
    """Wraps a denoiser and counts its calls (for tests and benchmarks)."""

    def __init__(self, fn: Denoiser) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x: Tensor, t: int) -> Tensor:
        self.calls += 1
        return self.fn(x, t)


@torch.no_grad()
def residual_ddim_sample(
    schedule: ResidualSchedule,
    denoise: Denoiser,
    z_c: Tensor,
    noise: Tensor,
    num_steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Decode z_0 from z_c: start at sqrt(a_N) z_c + sqrt(1-a_N) noise, S DDIM steps to t=0."""
    schedule.set_timesteps(num_steps, device=z_c.device)
    x = schedule.start(z_c, noise)
    for t in schedule.timesteps.tolist()[:-1]:
        eps = None if t == schedule.N else denoise(x, t)
        x = schedule.step(eps, t, x, z_c, generator=generator)
    return x
