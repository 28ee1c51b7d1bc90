"""ResULIC: ultra-low-bitrate image compression with semantic residual coding and
compression-aware diffusion, plus the platform that trains, tunes, tracks and serves it.

The folders follow the data flow (docs/architecture.md); each may import only those above it:

    config.py errors.py images.py   the ground: schemas, errors, image I/O
    entropy/ models/ diffusion/     the method: rANS coding, networks, the residual diffusion
    semantics/ codec/               the method: semantic residual, the file and its codec
    metrics/ services/ data/        the platform: quality metrics; MLflow, Ray, storage; training data
    evaluation/ train/ tune/        the platform: measure, train, sweep and promote
    serving/                        the platform: the codec endpoint's logic (serve/ wires it to Ray Serve)
    cli/                            the faces: the resulic command, the endpoint's client, job submission

The method (``entropy``, ``models``, ``diffusion``, ``semantics``, ``codec``) imports neither Ray
nor MLflow; tests/test_layout.py checks the layering and that no module imports itself in a circle.
"""

__version__ = "0.1.0"
