"""TensorRT / TensorRT-RTX engine building and the keyed engine cache."""
