"""sliminfer inside transformers' own entry points: the ``sliminfer-text-generation`` pipeline task."""
