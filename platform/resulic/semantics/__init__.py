"""Semantic residual coding (the method, RESULIC.md §5–§6): captioners, residual, text coding, Pfo; imports the ground and models."""
