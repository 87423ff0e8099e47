"""KV cache managers: where each layer's keys and values live during a request."""
