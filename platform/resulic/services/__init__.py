"""Platform services: MLflow tracking and registry, Ray cluster, storage, process runtime; imports the ground and codec (never train, tune, serving or cli)."""
