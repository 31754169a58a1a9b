"""Inference for users: `ladeda predict` (CSV, metrics, heatmaps) and `ladeda export` (ONNX, TorchScript)."""
