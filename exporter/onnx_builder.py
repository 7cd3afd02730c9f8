"""A small ONNX graph builder: named values, constants, initializers, model-local functions.

We build the decoder graphs op by op instead of tracing PyTorch: every shape the reduction changes is
computed in-graph from input shapes (Shape/Floor/TopK), so one graph serves any audio length, the merge is
a `WeightedMerge` node with a standard-op body, and nothing depends on a tracer's specialisation.

Nodes are named by scope, like onnxruntime-genai's model builder: inside `with b.scope("layers.3"),
b.scope("attn"), b.scope("q_proj"):` a MatMul is `/layers.3/attn/q_proj/MatMul` and its output
`/layers.3/attn/q_proj/MatMul/output_0`, so ONNX Runtime profiles and TensorRT messages name the layer.
A second node of the same type in the same scope gets `_1`, `_2`, ... Constants live under `/constants`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Above this many bytes of weights a graph keeps them in one `<file>.data` beside it (protobuf refuses
# messages over 2 GiB; the margin leaves room for the graph itself).
EXTERNAL_DATA_THRESHOLD = 1 << 30

CONSTANTS_SCOPE = "constants"


class GraphBuilder:
    """Accumulates nodes; `op(...)` returns the output name(s).

    name_nodes=True (graphs): nodes and their outputs are named by the current scope (see the module
    docstring). name_nodes=False (function bodies): nodes stay unnamed and values get short fresh names
    under `prefix`, because every inlined call of the function would repeat the names otherwise.
    """

    def __init__(self, prefix: str = "", name_nodes: bool = True):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counter = itertools.count()
        self._prefix = prefix
        self._const_cache: dict[tuple, str] = {}
        self._name_nodes = name_nodes
        self._scopes: list[str] = []
        self._name_counts: dict[str, int] = {}

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Nodes emitted inside are named `/<outer scopes>/<name>/<OpType>`."""
        if not name or "/" in name:
            raise ValueError(f"a scope is one non-empty path segment, got {name!r}")
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    @property
    def scope_path(self) -> str:
        """The current scope as a node-name prefix: "" at the top, "/layers.3/attn" inside two scopes."""
        return "".join(f"/{s}" for s in self._scopes)

    def fresh(self, hint: str = "t") -> str:
        return f"{self._prefix}{hint}_{next(self._counter)}"

    def _node_name(self, op_type: str, path: str) -> str:
        base = f"{path}/{op_type}"
        count = self._name_counts.get(base, 0)
        self._name_counts[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, *, name_hint: str | None = None, domain: str = "",
           outputs: list[str] | None = None, **attrs):
        if self._name_nodes:
            name = self._node_name(op_type, self.scope_path)
            outs = outputs or [f"{name}/output_{j}" for j in range(n_out)]
        else:
            name = None
            outs = outputs or [self.fresh(name_hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        """A Constant node (small values: shapes, axes, scalars); deduplicated, so in graphs it lives under
        `/constants` whatever scope first asked for it."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            if self._name_nodes:
                node_name = self._node_name("Constant", f"/{CONSTANTS_SCOPE}")
                name = f"{node_name}/output_0"
            else:
                node_name, name = None, self.fresh("c")
            self.nodes.append(helper.make_node("Constant", [], [name], name=node_name,
                                               value=numpy_helper.from_array(arr, name)))
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
