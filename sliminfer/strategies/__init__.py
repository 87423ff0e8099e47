"""Pruning strategies: scorers rank blocks, schedules say when and how many tokens to keep."""
