"""Runs TensorRT(-RTX) work for tests/plugins/test_tensorrt.py in a child process.

A plugin registry is process-wide and a mistake in loading a plugin library aborts or crashes the process, so
each test runs this script in its own interpreter and reads the last stdout line, ``RESULT <json>``.

usage: python trt_worker.py JSON_REQUEST
  {"mode": "safe" | "raw" | "none",   # load with fastadasp.plugins.load_into_registry / registry.load_library / not
   "library": path | null, "graphs": [path, ...],
   "build": {"graph": path, "serialize_plugin": bool} | null}
"""

from __future__ import annotations

import json
import re
import sys
import time

# Serialized plugin fields in an engine: name NUL, PluginFieldType (kINT32 = 5), length 1, then the int32 value.
_FIELD_RE = re.compile(rb"ratio_numerator\x00\x05\x00\x00\x00\x01\x00\x00\x00(.{4})", re.DOTALL)


def _profile(trt, builder, network):
    """Every dynamic dim: min 1, opt 16 (batch 1), max 64 (batch 2)."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        lo = [1 if d < 0 else d for d in dims]
        opt = [(1 if k == 0 else 16) if d < 0 else d for k, d in enumerate(dims)]
        hi = [(2 if k == 0 else 64) if d < 0 else d for k, d in enumerate(dims)]
        profile.set_shape(t.name, lo, opt, hi)
    return profile


def _parse(trt, logger, builder, path):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse_from_file(path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    return network, parser, ok, errors


def _plugin_layers(trt, network):
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != trt.LayerType.PLUGIN_V3:
            continue
        layer.__class__ = trt.IPluginV3Layer  # get_layer returns the base class
        core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        layers.append({
            "name": layer.name,
            "plugin": [core.plugin_name, core.plugin_version, core.plugin_namespace],
            "inputs": [[layer.get_input(j).dtype.name, list(layer.get_input(j).shape)]
                       for j in range(layer.num_inputs)],
            "outputs": [[layer.get_output(j).dtype.name, list(layer.get_output(j).shape)]
                        for j in range(layer.num_outputs)],
        })
    return layers


def main(request: dict) -> dict:
    import tensorrt_rtx as trt

    out: dict = {"version": trt.__version__}
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    if request["mode"] == "safe":
        from fastadasp.plugins import load_into_registry

        loaded = load_into_registry(trt, request["library"])
        out["link"] = {"how": loaded.link.how, "link": str(loaded.link.link), "target": str(loaded.link.target)}
    elif request["mode"] == "raw":
        registry = trt.get_plugin_registry()
        handle = registry.load_library(request["library"])
        out["raw_handle"] = handle is not None
        creator = registry.get_creator("WeightedMerge", "1", "fastadasp")
        out["raw_creator"] = None if creator is None else [creator.name, creator.plugin_version,
                                                           creator.plugin_namespace]
    out["graphs"] = {}
    for path in request.get("graphs", []):
        network, _parser, ok, errors = _parse(trt, logger, builder, path)
        out["graphs"][path] = {"ok": ok, "errors": errors, "num_layers": int(network.num_layers),
                               "plugin_layers": _plugin_layers(trt, network)}
    build = request.get("build")
    if build:
        network, _parser, ok, errors = _parse(trt, logger, builder, build["graph"])
        if not ok:
            raise RuntimeError(f"parse failed: {errors}")
        config = builder.create_builder_config()
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.SM86, 0)
        config.add_optimization_profile(_profile(trt, builder, network))
        if build.get("serialize_plugin"):
            from fastadasp.plugins import configure_builder_for_plugin

            out["builder_config"] = configure_builder_for_plugin(trt, config, request["library"])
        start = time.perf_counter()
        engine = builder.build_serialized_network(network, config)
        out["build_seconds"] = round(time.perf_counter() - start, 2)
        data = bytes(memoryview(engine)) if engine is not None else b""
        out["engine_bytes"] = len(data)
        out["engine_ratio_numerators"] = sorted(int.from_bytes(m.group(1), "little") for m in _FIELD_RE.finditer(data))
        out["engine_embedded_elf"] = data.count(b"\x7fELF")
        out["engine_mentions_plugin"] = data.count(b"WeightedMerge")
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print("RESULT " + json.dumps(result), flush=True)
