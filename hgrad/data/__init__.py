"""Real datasets."""
