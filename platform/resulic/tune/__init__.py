"""Sweeps and promotion (the platform): search spaces, objectives, the Ray Tune + Optuna + MLflow run, the gate; imports everything but serving and cli."""
