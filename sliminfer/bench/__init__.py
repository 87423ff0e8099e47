"""``sliminfer bench``: stock transformers against sliminfer on a grid of prompt and output lengths.

- :mod:`~sliminfer.bench.shapes`: real architectures' dimensions built in code (random weights);
- :mod:`~sliminfer.bench.cost`: prefill FLOPs and the decode bandwidth floor;
- :mod:`~sliminfer.bench.measure`: the timing (warm-up, CUDA events, medians, peak memory, OOM as a status);
- :mod:`~sliminfer.bench.stock`: the stock variants (as it comes, without cuDNN attention, static cache)
  and the best of them, the baseline every speedup is also given against;
- :mod:`~sliminfer.bench.grid`: the grid of prompt and output lengths, sliminfer's paths, the speedups;
- :mod:`~sliminfer.bench.run`: the model to time and the JSON record around the grid;
- :mod:`~sliminfer.bench.report`: JSON, printed tables, PNG plot.
"""
