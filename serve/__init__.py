"""The Ray Serve application of the ResULIC codec endpoint (see docs/serving.md)."""
