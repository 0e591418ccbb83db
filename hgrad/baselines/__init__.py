"""Baselines of the comparison: Basic Random Search (via the engine), Shape Evolution."""
