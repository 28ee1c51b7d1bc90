"""Compression-aware diffusion (the method): the residual schedule and its DDIM sampler (RESULIC.md §3); imports only the ground."""

from .sampler import CallCounter, residual_ddim_sample
from .schedule import ResidualSchedule, ResidualSchedules

__all__ = ["CallCounter", "ResidualSchedule", "ResidualSchedules", "residual_ddim_sample"]
