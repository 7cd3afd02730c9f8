"""Schedule-fixed reduced-token ONNX graphs (prefill, decode, audio front-end) and the manifest that
describes them: export.py writes an export directory, graphs.py builds the decoder graphs, merge_op.py the
WeightedMerge node and its function body, audio_encoder.py the front-end graph."""
