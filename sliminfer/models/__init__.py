"""Model adapters: the only modules that know transformers' internals."""
