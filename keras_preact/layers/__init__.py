"""Layers: the residual units, shortcuts, scanned stages, augmentation and the Keras compatibility shims."""
