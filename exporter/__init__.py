"""Schedule-fixed reduced-token ONNX graphs and the manifest (issue 3)."""
