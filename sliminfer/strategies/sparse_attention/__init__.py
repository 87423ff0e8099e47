"""Sparse prefill attention (the ``attention`` kind's ``minference`` and ``flexprefill``): block selection
(:mod:`.blocks`), the estimators (:mod:`.estimate`), the block-sparse kernels (:mod:`.kernel`) and the
strategies (:mod:`.strategy`)."""
