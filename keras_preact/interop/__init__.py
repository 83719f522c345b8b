"""Interop: keras.applications, keras-hub and timm weights in; weights="imagenet"."""
