"""fastadasp: FastAdaSP audio-token merging for speech-language models, exported to ONNX / TensorRT."""

__version__ = "0.2.0"
