"""Causal language models: generation over a decoder with a static key-value cache."""
