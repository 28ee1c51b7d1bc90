"""Semantic residual coding (RESULIC.md §5–§6): captioners, residual extraction, text coding, Pfo."""
