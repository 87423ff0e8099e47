"""Decoding the tokens after the first: eager (:mod:`.eager`) or static (:mod:`.static`, :mod:`.run`),
with the attention kernels of both (:mod:`.kernels`). The ``decode:`` config section chooses."""
