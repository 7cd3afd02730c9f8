"""A small ONNX graph builder: named values, constants, initializers, model-local functions.

We build the decoder graphs op by op instead of tracing PyTorch: every shape the reduction changes is
computed in-graph from input shapes (Shape/Floor/TopK), so one graph serves any audio length, the merge is
a `WeightedMerge` node with a standard-op body, and nothing depends on a tracer's specialisation.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


# Above this many bytes of weights a graph keeps them in one `<file>.data` beside it (protobuf refuses
# messages over 2 GiB; the margin leaves room for the graph itself).
EXTERNAL_DATA_THRESHOLD = 1 << 30

class GraphBuilder:
    """Accumulates nodes; `op(...)` returns the output name(s)."""

    def __init__(self, prefix: str = "", name_nodes: bool = True):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counter = itertools.count()
        self._prefix = prefix
        self._const_cache: dict[tuple, str] = {}
        # Function bodies leave nodes unnamed: every inlined call would repeat the names otherwise.
        self._name_nodes = name_nodes

    def fresh(self, hint: str = "t") -> str:
        return f"{self._prefix}{hint}_{next(self._counter)}"

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, *, name_hint: str | None = None, domain: str = "",
           outputs: list[str] | None = None, **attrs):
        outs = outputs or [self.fresh(name_hint or op_type.lower()) for _ in range(n_out)]
        name = self.fresh(f"n_{op_type}") if self._name_nodes else None
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        """A Constant node (small values: shapes, axes, scalars); deduplicated."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = self.fresh("c")
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
            self._const_cache[key] = name
        return self._const_cache[key]

    def initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    # --- shape helpers ------------------------------------------------------------------------
    def dim(self, tensor: str, axis: int) -> str:
        """A tensor's size along `axis` as an int64 [1] tensor."""
        return self.op("Shape", [tensor], start=axis, end=axis + 1)

    def slice(self, x: str, start: str, end: str, axis: int) -> str:
        return self.op("Slice", [x, start, end, self.const([axis])])

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(axes)])

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", [x, self.const(axes)])

    def reshape(self, x: str, shape: str | list[int]) -> str:
        # Default allowzero=0. TensorRT warns that runtime-computed dims (the length after a merge) "might be"
        # 0-placeholders, but allowzero=1 made TensorRT-RTX 1.7 fail the prefill build asking for 68 GB (it could
        # no longer bound those dims). Our shapes never contain 0, so both mean the same here.
        return self.op("Reshape", [x, shape if isinstance(shape, str) else self.const(shape)])

    def concat(self, parts: list[str], axis: int) -> str:
        return self.op("Concat", parts, axis=axis)


def make_model(graph_builder: GraphBuilder, name: str, opset: int, functions: list[onnx.FunctionProto] = (),
               extra_domains: dict[str, int] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(graph_builder.nodes, name, graph_builder.inputs, graph_builder.outputs,
                              graph_builder.initializers)
    imports = [helper.make_opsetid("", opset)]
    for domain, version in (extra_domains or {}).items():
        imports.append(helper.make_opsetid(domain, version))
    model = helper.make_model(graph, opset_imports=imports, functions=list(functions), producer_name="fastadasp")
    model.ir_version = 10  # ONNX 1.16+ / ORT 1.17+ / TensorRT 10 all read IR 10
    return model
