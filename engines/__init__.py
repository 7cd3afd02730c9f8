"""TensorRT / TensorRT-RTX engines for an export, by role (like Polygraphy's backend/trt):

toolkit.py   which builder is installed (load_tensorrt, the `_import_module` seam), ToolkitInfo, compute capabilities
profile.py   ShapeProfile and the profiles a manifest implies for each graph
network.py   ONNX -> network: logger, plugin libraries, parser errors, parse_onnx, strongly typed precision check
progress.py  phase lines, the heartbeat during long phases, cancellation on interrupt
util.py      one-line messages, pid-tagged temporary names and their cleanup, the engine stream writer
builder.py   build_engine: the steps from an ONNX file to a serialized engine
cache.py     EngineCache: engines keyed by everything that shapes them, shared across processes
pipeline.py  export-engine's engine stage: EngineBuildConfig, build_engines_for_export
"""
