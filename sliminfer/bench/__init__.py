"""``sliminfer bench``: stock transformers against sliminfer on a grid of prompt and output lengths.

- :mod:`~sliminfer.bench.shapes`: real architectures' dimensions built in code (random weights);
- :mod:`~sliminfer.bench.cost`: prefill FLOPs and the decode bandwidth floor;
- :mod:`~sliminfer.bench.grid`: the timing (warm-up, CUDA events, medians, peak memory, OOM as a status);
- :mod:`~sliminfer.bench.run`: the model to time and the JSON record around the grid;
- :mod:`~sliminfer.bench.report`: JSON, printed tables, PNG plot.
"""
