"""Sweeps: search spaces and objectives (no Ray), and the Ray Tune + Optuna + MLflow run."""
