"""Small ONNX graphs the engine tests build from (each builds in ~0.1 s with TensorRT-RTX on a CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastadasp.engines.profile import ShapeProfile

HIDDEN, TOP_K = 16, 4
PROFILE = ShapeProfile({"x": ((1, 1, HIDDEN), (2, 8, HIDDEN), (4, 64, HIDDEN))})


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def topk_model(path: Path, dtype=np.float32) -> Path:
    """x[batch, seq, 16] -> softmax(x @ W + b) -> top-4 (values, indices); batch and seq are dynamic."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(dtype), "W"),
        numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(dtype), "bias"),
        numpy_helper.from_array(np.array([TOP_K], np.int64), "k"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["proj"], name="proj"),
        helper.make_node("Add", ["proj", "bias"], ["logits"], name="add_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("TopK", ["probs", "k"], ["values", "indices"], axis=-1, name="topk"),
    ]
    graph = helper.make_graph(
        nodes, "topk_head",
        [helper.make_tensor_value_info("x", elem, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("values", elem, ["batch", "seq", TOP_K]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "seq", TOP_K])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def custom_op_model(path: Path) -> Path:
    """Relu followed by a node of a private domain that has neither a function body nor a plugin."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MergeTokens", ["r"], ["y"], name="merge_tokens_custom", domain="ai.fastadasp.test"),
    ]
    graph = helper.make_graph(
        nodes, "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.fastadasp.test", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))  # the checker would reject the unknown domain; the parser must too
    return path
