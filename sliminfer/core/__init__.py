"""The pipeline's core: config, registry, staged forward pass, results."""
