"""Testing helpers for sliminfer and its plugins: tiny in-process models (:mod:`.tiny_models`) and the
masked full-length reference (:mod:`.reference`). Nothing here imports pytest, and the library itself
never imports this package."""
