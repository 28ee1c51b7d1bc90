"""ResULIC: ultra-low-bitrate image compression with semantic residual coding and
compression-aware diffusion, plus the platform that trains, tunes, tracks and serves it.

The core (``models``, ``diffusion``, ``codec``) imports neither Ray nor MLflow.
"""

__version__ = "0.1.0"
