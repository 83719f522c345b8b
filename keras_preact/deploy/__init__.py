"""Deploy: verified artifacts (SavedModel, LiteRT, ONNX), evaluation, timings."""
