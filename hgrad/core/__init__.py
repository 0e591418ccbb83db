"""The engine: nothing here names a task, a network or a loss (docs/design.md §1-2)."""
