"""``sliminfer compare``: speed and accuracy of several configs in one table.

Why one command: a pruning strategy is only worth its speedup at the accuracy it keeps, so both belong
in the same row, measured in the same run on the same inputs for every config. The speed side times
each config on one random-weights model of a real architecture (:mod:`sliminfer.bench`), the
accuracy side runs the eval harness on the real default model (:mod:`sliminfer.eval`); this package
only chooses what to run, joins the results and draws them.
"""
