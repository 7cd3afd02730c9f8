"""Schedule-fixed reduced-token ONNX graphs (prefill, decode, WavLLM's prompt scale, audio front-end) and the
manifest that describes them: export.py writes an export directory (graphs, tokenizer, prompt template,
manifest), graphs.py builds the decoder and prompt-scale graphs, merge_op.py the WeightedMerge node and its
function body, audio_encoder.py the front-end graph with a dynamic clip length."""
