"""The WeightedMerge TensorRT plugin: sources (weighted_merge/), its CMake build and loading."""
