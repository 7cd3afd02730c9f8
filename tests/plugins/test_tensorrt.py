"""The real TensorRT-RTX builder on a CPU with the plugin library: the exported prefill graphs of the tiny presets
import every WeightedMerge node as a PLUGIN_V3 layer, with the right output types and lengths, engines build for
SM86 with ratio_numerator in the serialized plugin fields, and without the library the same graph builds through
the function body. The two process-level traps of TensorRT-RTX (plugins/loader.py) are exercised in child
processes.

All TensorRT work runs in child processes (tests/plugins/trt_worker.py): a plugin registry is process-wide, and
a loading mistake aborts the process instead of raising. The children import TensorRT-RTX from a folder of
symlinks to its libraries ("farm"), so the tests never modify the installed package and every run starts from a
fresh install's layout (no unversioned libtensorrt_rtx.so).
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
from collections import Counter
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from plugin_support import note, run_worker, tensorrt_rtx_or_skip, worker_result

from fastadasp.exporter.merge_op import MERGE_DOMAIN, MERGE_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
from fastadasp.plugins import merged_length

pytestmark = pytest.mark.tensorrt

PRESETS = ["tiny-qwen2-audio", "tiny-llama", "tiny-wavllm", "tiny-qwen-audio"]
TRT_TYPES = {"fp32": "FLOAT", "fp16": "HALF", "bf16": "BF16"}
ONNX_TYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
# The build-time methods TensorRT-RTX 1.7 calls (plugins/weighted_merge/README.md lists them).
BUILD_METHODS = {"getCreators", "setLoggerFinder", "getFieldNames", "createPlugin", "getCapabilityInterface",
                 "getNbOutputs", "getOutputDataTypes", "getOutputShapes", "clone", "supportsFormatCombination",
                 "getFormatCombinationLimit", "configurePlugin", "getWorkspaceSize", "getNbTactics",
                 "getFieldsToSerialize"}
RUNTIME_ONLY = {"enqueue", "onShapeChange", "attachToContext", "setTactic"}


# ------------------------------------------------------------------------------------------ fixtures


def make_farm(root: Path) -> Path:
    """A folder whose tensorrt_rtx_libs package loads the installed TensorRT-RTX libraries through symlinks,
    without the unversioned libtensorrt_rtx.so (as a fresh `pip install tensorrt-rtx-cu13` lays them out)."""
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("TensorRT-RTX's libraries package (tensorrt_rtx_libs) is not installed")
    real = Path(list(spec.submodule_search_locations)[0])
    farm = root / "tensorrt_rtx_libs"
    farm.mkdir(parents=True)
    shutil.copy(real / "__init__.py", farm / "__init__.py")
    versioned = sorted(p for p in real.glob("*.so.*"))
    if not any(p.name.startswith("libtensorrt_rtx.so.") for p in versioned):
        pytest.skip(f"unexpected TensorRT-RTX layout in {real}")
    for lib in versioned:
        (farm / lib.name).symlink_to(lib)
    return root


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tensorrt_rtx_or_skip()
    return make_farm(tmp_path_factory.mktemp("trt-farm"))


def child_env(farm: Path, trace: Path | None = None) -> dict:
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(farm), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if trace is not None:
        env["FASTADASP_PLUGIN_TRACE"] = str(trace)
    return env


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Prefill graphs exported through the CLI (skip engines): every tiny preset in fp32 (decay schedule, a
    different ratio per merge layer) and tiny-llama in fp16 and bf16."""
    tensorrt_rtx_or_skip()
    from fastadasp.cli import export_engine_main

    root = tmp_path_factory.mktemp("plugin-exports")
    jobs = {name: (name, "fp32", "decay") for name in PRESETS}
    jobs.update({f"tiny-llama-{d}": ("tiny-llama", d, "constant") for d in ("fp16", "bf16")})
    out = {}
    for tag, (model, dtype, schedule) in jobs.items():
        code = export_engine_main(["--model", model, "--schedule", schedule, "--start-layer", "1", "--ratio", "0.5",
                                   "--dtype", dtype, "--audio-tokens-range", "1:48:128", "--skip-engines",
                                   "--out", str(root / tag)])
        assert code == 0, f"export of {tag} failed"
        out[tag] = (root / tag / "prefill.onnx", dtype)
    return out


def merge_nodes(path: Path) -> list[onnx.NodeProto]:
    model = onnx.load(str(path), load_external_data=False)
    return [n for n in model.graph.node if n.op_type == MERGE_OP and n.domain == MERGE_DOMAIN]


def ratio_of(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "ratio_numerator")


def static_merge_graph(path: Path, dtype: str, cases: list[tuple[int, int]], batch: int = 2, hidden: int = 8,
                       key_dim: int = 6) -> Path:
    """One WeightedMerge node per (n, q) on its own fixed-shape inputs. No function body: with the plugin
    registered the parser imports the node as the plugin (the exported graphs above cover the body)."""
    elem = ONNX_TYPES[dtype]
    inputs, outputs, nodes = [], [], []
    for i, (n, q) in enumerate(cases):
        kept = n - merged_length(n, q)
        inputs += [helper.make_tensor_value_info(f"x{i}", elem, [batch, n, hidden]),
                   helper.make_tensor_value_info(f"keys{i}", elem, [batch, n, key_dim]),
                   helper.make_tensor_value_info(f"received{i}", TensorProto.FLOAT, [batch, n])]
        outputs += [helper.make_tensor_value_info(f"merged{i}", elem, [batch, kept, hidden]),
                    helper.make_tensor_value_info(f"source{i}", TensorProto.INT64, [batch, kept])]
        nodes.append(helper.make_node(MERGE_OP, [f"x{i}", f"keys{i}", f"received{i}"], [f"merged{i}", f"source{i}"],
                                      name=f"merge_{i}", domain=MERGE_DOMAIN, ratio_numerator=q,
                                      plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE))
    graph = helper.make_graph(nodes, "static_merges", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MERGE_DOMAIN, 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def traced_methods(trace: Path) -> Counter:
    return Counter(line.split()[0] for line in trace.read_text().splitlines() if line.strip())


# ------------------------------------------------------------------------------------------ parsing


def test_every_weighted_merge_node_becomes_a_plugin_layer(plugin_build, farm, exports, tmp_path):
    trace = tmp_path / "trace.txt"
    graphs = {tag: str(path) for tag, (path, _) in exports.items()}
    result = worker_result(run_worker({"mode": "safe", "library": str(plugin_build.library),
                                       "graphs": list(graphs.values())}, env=child_env(farm, trace)))
    # the shared farm gets its link from whichever test loads first
    assert result["link"]["how"] in ("created", "present")
    assert Path(result["link"]["link"]) == farm / "tensorrt_rtx_libs" / "libtensorrt_rtx.so"
    all_ratios = []
    for tag, (path, dtype) in exports.items():
        parsed = result["graphs"][str(path)]
        assert parsed["ok"] and not parsed["errors"], (tag, parsed["errors"])
        nodes = merge_nodes(path)
        layers = parsed["plugin_layers"]
        assert nodes and len(layers) == len(nodes), (tag, len(layers), len(nodes))
        assert sorted(layer["name"] for layer in layers) == sorted(n.name for n in nodes)
        t = TRT_TYPES[dtype]
        hidden = onnx.load(str(path), load_external_data=False).graph.input[1].type.tensor_type.shape.dim[2].dim_value
        for layer in layers:
            assert layer["plugin"] == ["WeightedMerge", "1", "fastadasp"]
            assert [i[0] for i in layer["inputs"]] == [t, t, "FLOAT"]
            (merged_type, merged_shape), (source_type, source_shape) = layer["outputs"]
            assert merged_type == t and source_type == "INT64"
            assert len(merged_shape) == 3 and merged_shape[1] == -1 and merged_shape[2] == hidden
            assert len(source_shape) == 2 and source_shape[1] == -1
        all_ratios += [ratio_of(n) for n in nodes]
    # one createPlugin per node, in the build phase, carrying each node's ratio_numerator as kINT32 (type 5)
    created = [line for line in trace.read_text().splitlines() if line.startswith("createPlugin")]
    assert all("phase=build" in line and "ratio_numerator:5" in line for line in created)
    assert sorted(int(line.rsplit("=", 1)[1]) for line in created) == sorted(all_ratios)
    assert len(set(all_ratios)) >= 3  # the decay schedule really gives the nodes different ratios


def test_static_shapes_follow_the_length_rule(plugin_build, farm, tmp_path):
    """With fixed input shapes TensorRT folds getOutputShapes' expression itself: every output length must be
    n - m for the Python rule."""
    cases = [(1, 65535), (2, 65535), (3, 32768), (7, 19661), (64, 0), (64, 1), (100, 19661), (1500, 32768),
             (3000, 32768), (3000, 45000), (4097, 58982), (8192, 6553), (5, 65535), (37, 21846)]
    path = static_merge_graph(tmp_path / "static.onnx", "fp32", cases)
    result = worker_result(run_worker({"mode": "safe", "library": str(plugin_build.library), "graphs": [str(path)]},
                                      env=child_env(farm)))
    layers = {layer["name"]: layer for layer in result["graphs"][str(path)]["plugin_layers"]}
    assert len(layers) == len(cases)
    for i, (n, q) in enumerate(cases):
        kept = n - merged_length(n, q)
        assert layers[f"merge_{i}"]["outputs"] == [["FLOAT", [2, kept, 8]], ["INT64", [2, kept]]], (n, q)


# ------------------------------------------------------------------------------------------ building


def test_exported_prefill_builds_for_sm86_with_the_plugin(plugin_build, farm, exports, tmp_path):
    trace = tmp_path / "trace.txt"
    path, _ = exports["tiny-qwen2-audio"]
    result = worker_result(run_worker({"mode": "safe", "library": str(plugin_build.library),
                                       "build": {"graph": str(path)}}, env=child_env(farm, trace)))
    assert result["engine_bytes"] > 100_000
    # ratio_numerator round-trips: the engine's serialized plugin fields hold exactly the nodes' values
    assert result["engine_ratio_numerators"] == sorted(ratio_of(n) for n in merge_nodes(path))
    methods = traced_methods(trace)
    assert BUILD_METHODS <= set(methods), f"not called: {sorted(BUILD_METHODS - set(methods))}"
    assert not RUNTIME_ONLY & set(methods)  # nothing runs a kernel on a machine without a GPU
    note("methods", "TensorRT-RTX builder called (parse + SM86 build of tiny-qwen2-audio prefill): "
                    + ", ".join(f"{m} x{c}" for m, c in sorted(methods.items())))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_engine_embeds_the_plugin(plugin_build, farm, tmp_path, dtype):
    """fp16 / bf16 merges build, and with plugins_to_serialize (version-compatible, lean runtime excluded) the
    library travels inside the engine."""
    path = static_merge_graph(tmp_path / f"static-{dtype}.onnx", dtype, [(48, 32768), (3000, 19661)])
    result = worker_result(run_worker({"mode": "safe", "library": str(plugin_build.library), "graphs": [str(path)],
                                       "build": {"graph": str(path), "serialize_plugin": True}}, env=child_env(farm)))
    layers = result["graphs"][str(path)]["plugin_layers"]
    assert [layer["outputs"][0][0] for layer in layers] == [TRT_TYPES[dtype]] * 2
    assert result["builder_config"]["flags"] == ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]
    assert result["engine_bytes"] > 0 and result["engine_embedded_elf"] >= 1
    assert result["engine_ratio_numerators"] == [19661, 32768]


def test_without_the_library_the_function_body_builds(farm, exports):
    path, _ = exports["tiny-qwen2-audio"]
    result = worker_result(run_worker({"mode": "none", "graphs": [str(path)], "build": {"graph": str(path)}},
                                      env=child_env(farm)))
    parsed = result["graphs"][str(path)]
    assert parsed["ok"] and parsed["plugin_layers"] == []
    assert result["engine_bytes"] > 100_000 and result["engine_ratio_numerators"] == []


# ------------------------------------------------------------------------------------------ the two traps


def test_unversioned_runtime_trap_is_handled_by_the_loader(plugin_build, exports, tmp_path):
    """The unversioned-runtime trap (plugins/loader.py). Control: the plain registry.load_library on a fresh
    layout aborts the child (SIGABRT) as soon as the parser meets a plugin node. With load_into_registry the same
    parse succeeds and leaves the unversioned link beside the versioned library."""
    tensorrt_rtx_or_skip()
    path, _ = exports["tiny-llama"]
    request = {"library": str(plugin_build.library), "graphs": [str(path)]}

    raw_farm = make_farm(tmp_path / "raw")
    raw = run_worker({**request, "mode": "raw"}, env=child_env(raw_farm))
    assert raw.returncode == -signal.SIGABRT, (raw.returncode, raw.stderr[-2000:])
    assert "terminate called" in raw.stderr

    safe_farm = make_farm(tmp_path / "safe")
    result = worker_result(run_worker({**request, "mode": "safe"}, env=child_env(safe_farm)))
    link = safe_farm / "tensorrt_rtx_libs" / "libtensorrt_rtx.so"
    target = link.with_name("libtensorrt_rtx.so.1")
    assert result["link"] == {"how": "created", "link": str(link), "target": str(target)}
    assert link.is_symlink()
    assert len(result["graphs"][str(path)]["plugin_layers"]) == len(merge_nodes(path))


def test_registry_loads_the_library_without_crashing(plugin_build, farm):
    """The registry-ABI trap (plugins/weighted_merge/weightedMergePlugin.h): TensorRT-RTX dlopens the library
    and calls getCreators / setLoggerFinder; a library that touched the registry itself would crash here
    (tests/plugins/test_build.py checks the symbols statically)."""
    result = worker_result(run_worker({"mode": "raw", "library": str(plugin_build.library), "graphs": []},
                                      env=child_env(farm)))
    assert result["raw_handle"] is True and result["raw_creator"] == ["WeightedMerge", "1", "fastadasp"]
