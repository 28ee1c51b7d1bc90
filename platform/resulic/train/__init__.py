"""Staged training (the platform, RESULIC.md §4): schema, losses, checkpoints, the Ray Train loop and driver; imports the ground, the method, metrics, services, data, evaluation.

``config``, ``model``, ``checkpoint`` and ``perceptual`` need neither Ray nor MLflow; ``loop``
(per-worker) and ``trainer`` (driver) wire them to Ray Train and MLflow.
"""
