"""Compression-aware diffusion (the method): the residual schedule and its DDIM sampler (RESULIC.md §3); imports only the ground."""

from .sampler import CallCounter, residual_ddim_sample

__all__ = ["CallCounter", "ResidualSchedule", "ResidualSchedules", "residual_ddim_sample"]


def __getattr__(name: str):
    # The schedule is a diffusers scheduler, and importing diffusers takes seconds: only a
    # decoder (or a trainer) asks for it; an encoder imports the sampler's module and no more.
    if name in ("ResidualSchedule", "ResidualSchedules"):
        from . import schedule

        return getattr(schedule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
