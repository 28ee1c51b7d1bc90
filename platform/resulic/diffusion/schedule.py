"""The residual (compression-aware) diffusion schedule, shaped like a diffusers scheduler.

Forward process, for n in 0..N (N = N_r, the residual steps of the rate point):

    z_n = sqrt(a_n) z_0 + sqrt(1 - a_n) (eps + gamma_n rho),   rho = z_c - z_0,

with a_n = SD's alphas_cumprod[n] and r_n = sqrt(1/a_n - 1). Two variants of gamma_n:

- ``constant`` (released models, the default): gamma = 1 / r_N, decoded with eta = 0;
- ``time_varying``: gamma_n = r_n / r_N**2 (rides the DDPM chain exactly), decoded with eta = 1.

Each variant's posterior is consistent with its forward process only with that eta (§3.4);
``RatePointConfig`` enforces the pair for the time-varying variant.

Both make z_N = sqrt(a_N) z_c + sqrt(1 - a_N) eps: the start of decoding needs only z_c.
The network predicts eps; x0 follows in closed form because z_c is known (§3.3).
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor


class ResidualSchedule(SchedulerMixin, ConfigMixin):
    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        residual_steps: int = 300,
        gamma_variant: str = "constant",
        eta: float = 0.0,
    ) -> None:
        if beta_schedule != "scaled_linear":
            raise ValueError("only SD's 'scaled_linear' beta schedule is supported")
        if not 1 <= residual_steps < num_train_timesteps:
            raise ValueError(f"residual_steps must be in [1, {num_train_timesteps - 1}], got {residual_steps}")
        if gamma_variant not in ("constant", "time_varying"):
            raise ValueError(f"gamma_variant must be 'constant' or 'time_varying', got {gamma_variant!r}")
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_train_timesteps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # float64: coefficients are exact enough
        self.timesteps = torch.tensor([residual_steps, 0])

    # -- scalar helpers (float64) ------------------------------------------------------------
    @property
    def N(self) -> int:
        return int(self.config.residual_steps)

    def _a(self, t: Tensor | int) -> Tensor:
        # The table stays on the CPU in float64; timesteps may come from any device.
        return self.alphas_cumprod[torch.as_tensor(t, dtype=torch.long).cpu()]

    def r(self, t: Tensor | int) -> Tensor:
        return torch.sqrt(1.0 / self._a(t) - 1.0)

    def gamma(self, t: Tensor | int) -> Tensor:
        r_N = self.r(self.N)
        if self.config.gamma_variant == "constant":
            return torch.ones_like(self.r(t)) / r_N
        return self.r(t) / r_N**2

    @staticmethod
    def _bcast(coef: Tensor, like: Tensor) -> Tensor:
        coef = coef.to(dtype=like.dtype, device=like.device)
        return coef.reshape(-1, *([1] * (like.dim() - 1))) if coef.dim() else coef

    # -- forward process ---------------------------------------------------------------------
    def q_sample(self, z0: Tensor, z_c: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """z_t given z_0, z_c and eps (t is an int or a per-sample tensor)."""
        a = self._a(t)
        sa, s1 = self._bcast(a.sqrt(), z0), self._bcast((1 - a).sqrt(), z0)
        g = self._bcast(self.gamma(t), z0)
        return sa * z0 + s1 * (noise + g * (z_c - z0))

    def predict_x0(self, z_t: Tensor, eps: Tensor, z_c: Tensor, t: Tensor | int) -> Tensor:
        """x0 from z_t and predicted eps; at t = N (unidentifiable) it is z_c, as in the paper."""
        t = torch.as_tensor(t, dtype=torch.long)
        a, r_t, r_N = self._a(t), self.r(t), self.r(self.N)
        if self.config.gamma_variant == "constant":
            zc_coef, denom = 1.0 / r_N, 1.0 - r_t / r_N
        else:
            zc_coef, denom = r_t / r_N**2, 1.0 - r_t**2 / r_N**2
        at_N = t == self.N
        denom = torch.where(at_N, torch.ones_like(denom), denom)
        sa, s1 = self._bcast(a.sqrt(), z_t), self._bcast((1 - a).sqrt(), z_t)
        x0 = (z_t - s1 * (eps + self._bcast(zc_coef * torch.ones_like(r_t), z_t) * z_c)) / (sa * self._bcast(denom, z_t))
        return torch.where(self._bcast(at_N, z_t).to(torch.bool), z_c, x0)

    # -- sampling ----------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """S+1 grid points from N down to 0: floor(i N / S) for i = S..0.

        With S dividing N this is the official grid {0, c, 2c, ..., N}, c = N / S.
        """
        S = int(num_inference_steps)
        if not 1 <= S <= self.N:
            raise ValueError(f"num_inference_steps must be in [1, N={self.N}], got {S}")
        grid = [(i * self.N) // S for i in range(S, -1, -1)]
        self.num_inference_steps = S
        self.timesteps = torch.tensor(grid, dtype=torch.long, device=device)

    def step_coefficients(self, t: int, s: int) -> tuple[float, float, float]:
        """(iota, zeta, sigma) of x_s = iota x_t + zeta x0 + sigma noise (RESULIC.md §3.4).

        eta = 0 (DDIM): iota = sqrt((1-a_s)/(1-a_t)), sigma = 0; it keeps the effective noise
        (x_t - sqrt(a_t) x0)/sqrt(1-a_t) = eps + gamma rho, so it fits the constant variant.
        eta > 0 (the official DDPM-style branch): iota = (1-a_s)/(1-a_t) sqrt(a_t/a_s), the DDPM
        posterior's weight for every eta, and sigma = eta sqrt((1-a_s)/(1-a_t) (1 - a_t/a_s));
        with eta = 1 this is the DDPM posterior, exact for the time-varying variant.
        Both: zeta = sqrt(a_s) - iota sqrt(a_t).
        """
        a_t, a_s = self._a(t), self._a(s)
        eta = float(self.config.eta)
        if eta == 0:
            iota, sigma = torch.sqrt((1 - a_s) / (1 - a_t)), torch.zeros(())
        else:
            iota = (1 - a_s) / (1 - a_t) * torch.sqrt(a_t / a_s)
            sigma = eta * torch.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        zeta = a_s.sqrt() - iota * a_t.sqrt()
        return float(iota), float(zeta), float(sigma)

    def previous_timestep(self, t: int) -> int:
        grid = self.timesteps.tolist()
        i = grid.index(int(t))
        if i + 1 >= len(grid):
            raise ValueError(f"timestep {t} is the last of the grid")
        return grid[i + 1]

    def step(
        self,
        model_output: Tensor | None,
        timestep: int,
        sample: Tensor,
        z_c: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One residual DDIM step from ``timestep`` to the previous grid point.

        ``model_output`` (predicted eps) is not used, and may be None, at t = N. With eta > 0 the
        step's noise comes from ``generator`` (on the CPU, so every device draws the same), which
        is then required: a decoder seeds it, so the same bytes give the same pixels.
        """
        t = int(timestep)
        s = self.previous_timestep(t)
        x0 = z_c if t == self.N else self.predict_x0(sample, model_output, z_c, t)
        iota, zeta, sigma = self.step_coefficients(t, s)
        prev = iota * sample + zeta * x0
        if sigma > 0:
            if generator is None:
                raise ValueError("a step with eta > 0 draws noise: pass a seeded generator")
            noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device="cpu").to(sample.device)
            prev = prev + sigma * noise
        return prev

    def start(self, z_c: Tensor, noise: Tensor) -> Tensor:
        """z_N = sqrt(a_N) z_c + sqrt(1 - a_N) eps."""
        a = self._a(self.N)
        return float(a.sqrt()) * z_c + float((1 - a).sqrt()) * noise


class ResidualSchedules:
    """A rate point's residual schedules, one per N_r, each made once (its gamma and eta are the
    rate point's): a variable-rate model's levels, and the training batches that follow them, use
    several N_r. ``rate_point``: anything with ``gamma`` and ``resolved_eta``."""

    def __init__(self, rate_point) -> None:
        self._rate_point = rate_point
        self._made: dict[int, ResidualSchedule] = {}

    def __call__(self, residual_steps: int) -> ResidualSchedule:
        if residual_steps not in self._made:
            rp = self._rate_point
            self._made[residual_steps] = ResidualSchedule(residual_steps=residual_steps, gamma_variant=rp.gamma,
                                                          eta=rp.resolved_eta)
        return self._made[residual_steps]
