"""Spec: the paper's vocabulary as plain data (no Keras)."""
