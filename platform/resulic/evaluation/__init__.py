"""Evaluation (the platform): round trips, RD evaluation, baselines, results and plots; imports the ground, the method, metrics and services."""
