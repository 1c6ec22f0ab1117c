"""Experiments: the generic training run and (later) one module per paper's reproduction."""
