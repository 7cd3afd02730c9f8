"""The WeightedMerge TensorRT plugin: build it, load it into a TensorRT / TensorRT-RTX registry, run its CPU twin.

    from fastadasp.plugins import build_plugin, load_into_registry, configure_builder_for_plugin

    build = build_plugin()                          # CMake + nvcc, reused when up to date
    loaded = load_into_registry(trt, build.library)  # before the OnnxParser parses a graph
    configure_builder_for_plugin(trt, config, build.library)  # embed it in the engine (optional)

Sources, contract and limits: plugins/weighted_merge/README.md. TensorRT is never imported here: the caller
passes its module, so this package imports without it.
"""

from fastadasp.plugins.build import (
    DEFAULT_ARCHITECTURES,
    PluginBuild,
    PluginBuildError,
    ToolchainMissing,
    build_plugin,
    default_build_root,
    find_tensorrt_headers,
    find_toolchain,
)
from fastadasp.plugins.cpu import CpuTwin, merged_length
from fastadasp.plugins.loader import (
    LinkStatus,
    LoadedPlugin,
    PluginLoadError,
    check_library_abi,
    configure_builder_for_plugin,
    ensure_unversioned_runtime,
    load_into_registry,
)

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "CpuTwin",
    "LinkStatus",
    "LoadedPlugin",
    "PluginBuild",
    "PluginBuildError",
    "PluginLoadError",
    "ToolchainMissing",
    "build_plugin",
    "check_library_abi",
    "configure_builder_for_plugin",
    "default_build_root",
    "ensure_unversioned_runtime",
    "find_tensorrt_headers",
    "find_toolchain",
    "load_into_registry",
    "merged_length",
]
