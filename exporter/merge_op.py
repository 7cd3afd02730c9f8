"""`WeightedMerge` as an ONNX model-local function: one node that ONNX Runtime inlines (standard-op body)
and TensorRT's ONNX parser can import as our plugin (it reads `plugin_namespace` / `plugin_version`).

Node (domain "fastadasp", opset 1):
  inputs   x [B, n, D] (T), keys [B, n, K] (T), received [B, n] (float32)
  outputs  merged [B, n - m, D] (T), source_index [B, n - m] (int64, first member of each group)
  attrs    ratio_numerator (int): m = min(n * q // 65536, n - 1)
           plugin_version (string), plugin_namespace (string): read by TensorRT, unused by the body

The body avoids the two forms TensorRT's parser rejects or computes badly (docs/architecture.md, "The
WeightedMerge node"): scatter-add reductions (TensorRT rejects the reduction without NVIDIA's own plugin, and
atomics are non-deterministic) and whole-span prefix-sum differences (cancellation). Group sums use a
segmented log-depth (Hillis-Steele) scan: ceil(log2 n_max) shift-and-add steps that only add a neighbour from
the same group, so sums never leave their group and never cancel. Group ends/starts are found with TopK, which
breaks ties towards the lower index, exactly like the PyTorch reference's stable sort.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper

from fastadasp.exporter.onnx_builder import GraphBuilder
from fastadasp.reduction.merge import RATIO_DENOMINATOR

MERGE_DOMAIN = "fastadasp"
MERGE_OP = "WeightedMerge"
MERGE_DOMAIN_VERSION = 1
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "fastadasp"
_TINY = float(np.finfo(np.float32).tiny)
_NORM_EPS = 1e-12


def scan_steps(max_tokens: int) -> int:
    """Shift-and-add steps that cover any group in a span of up to max_tokens tokens."""
    return max(1, math.ceil(math.log2(max(max_tokens, 2))))


def _attr_ref_constant(b: GraphBuilder, attr: str) -> str:
    """A Constant whose int value is the calling node's attribute `attr`."""
    out = b.fresh("attr")
    node = helper.make_node("Constant", [], [out])
    node.attribute.append(AttributeProto(name="value_int", ref_attr_name=attr, type=AttributeProto.INT))
    b.nodes.append(node)
    return out


def _shift(b: GraphBuilder, x: str, n: str, step: int, axis_rank: int, fill: float | int, right: bool = True) -> str:
    """Shift along axis 1 by `step` (pad-then-slice, so the result keeps the dynamic length n)."""
    pads = [0] * (2 * axis_rank)
    if right:
        pads[1] = step
        start, end = b.const([0]), n
    else:
        pads[axis_rank + 1] = step
        start, end = b.const([step]), b.op("Add", [n, b.const([step])])
    fill_value = b.const(fill, dtype=np.float32 if isinstance(fill, float) else np.int64)
    padded = b.op("Pad", [x, b.const(pads), fill_value], mode="constant")
    return b.slice(padded, start, end, axis=1)


def _ascending_positions(b: GraphBuilder, mask: str, n_f: str, positions_f: str, count: str) -> str:
    """Indices [B, count] of the True entries of mask [B, n], ascending (TopK over n - j)."""
    score = b.op("Where", [mask, b.op("Sub", [n_f, positions_f]), b.const(0.0, np.float32)])
    _, index = b.op("TopK", [score, count], n_out=2, axis=-1, largest=1, sorted=1)
    return index


def build_weighted_merge_function(max_tokens: int, opset: int) -> onnx.FunctionProto:
    """The function body for spans of up to max_tokens tokens, importing the standard domain at `opset` (a
    model-local function must import the same version of a domain as the model that calls it). Every op in
    the body keeps its signature across opsets 17..21 (ReduceSum, Pad, Squeeze/Unsqueeze, Slice take their
    axes as inputs since opset 13; later versions only add types, attributes with defaults, or optional
    trailing inputs)."""
    b = GraphBuilder(prefix="wm_", name_nodes=False)
    x, keys, received = "x", "keys", "received"
    n = b.dim(x, 1)  # [1] int64
    q = _attr_ref_constant(b, "ratio_numerator")
    m = b.op("Div", [b.op("Mul", [n, q]), b.const(RATIO_DENOMINATOR)])  # floor: both operands >= 0
    m = b.op("Min", [m, b.op("Max", [b.op("Sub", [n, b.const([1])]), b.const([0])])])
    kept = b.op("Sub", [n, m])

    # 1. cosine similarity of adjacent keys (fp32)
    kf = b.op("Cast", [keys], to=TensorProto.FLOAT)
    norm = b.op("Sqrt", [b.op("ReduceSum", [b.op("Mul", [kf, kf]), b.const([-1])], keepdims=1)])
    kn = b.op("Div", [kf, b.op("Max", [norm, b.const(_NORM_EPS, np.float32)])])
    n_minus_1 = b.op("Sub", [n, b.const([1])])
    left = b.slice(kn, b.const([0]), n_minus_1, axis=1)
    right = b.slice(kn, b.const([1]), n, axis=1)
    sim = b.op("ReduceSum", [b.op("Mul", [left, right]), b.const([-1])], keepdims=0)  # [B, n-1]

    # 2. top-m edges (ties -> lower index) -> picked mask via a plain scatter (no reduction)
    _, edge_index = b.op("TopK", [sim, m], n_out=2, axis=-1, largest=1, sorted=1)
    ones = b.op("Expand", [b.const(1.0, np.float32), b.op("Shape", [edge_index])])
    picked = b.op("ScatterElements", [b.op("Mul", [sim, b.const(0.0, np.float32)]), edge_index, ones], axis=1)

    # 3. group ids g_j = j - sum_{i<j} picked_i
    batch = b.dim(x, 0)
    zero_col = b.op("Expand", [b.const(0.0, np.float32), b.concat([batch, b.const([1])], 0)])
    merged_before = b.op("CumSum", [b.concat([zero_col, picked], 1), b.const(1)])
    positions = b.op("Range", [b.const(0), b.squeeze(n, [0]), b.const(1)])  # [n] int64
    positions_f = b.op("Cast", [positions], to=TensorProto.FLOAT)
    groups = b.op("Sub", [positions_f, merged_before])  # [B, n] float (exact integers)

    # 4. weighted values, segmented inclusive scan inside each group
    w = b.op("Cast", [received], to=TensorProto.FLOAT)
    value = b.op("Mul", [b.op("Cast", [x], to=TensorProto.FLOAT), b.unsqueeze(w, [2])])
    weight = w
    for k in range(scan_steps(max_tokens)):
        step = 1 << k
        same = b.op("Equal", [_shift(b, groups, n, step, 2, -1.0), groups])
        value = b.op("Add", [value, b.op("Where", [b.unsqueeze(same, [2]), _shift(b, value, n, step, 3, 0.0), b.const(0.0, np.float32)])])
        weight = b.op("Add", [weight, b.op("Where", [same, _shift(b, weight, n, step, 2, 0.0), b.const(0.0, np.float32)])])

    # 5. group ends hold the sums; group starts are the source indices
    n_f = b.op("Cast", [n], to=TensorProto.FLOAT)
    is_end = b.op("Not", [b.op("Equal", [groups, _shift(b, groups, n, 1, 2, -1.0, right=False)])])
    is_start = b.op("Not", [b.op("Equal", [groups, _shift(b, groups, n, 1, 2, -1.0)])])
    end_index = _ascending_positions(b, is_end, n_f, positions_f, kept)
    start_index = _ascending_positions(b, is_start, n_f, positions_f, kept)
    gather_shape = b.concat([b.op("Shape", [end_index]), b.dim(x, 2)], 0)
    numer = b.op("GatherElements", [value, b.op("Expand", [b.unsqueeze(end_index, [2]), gather_shape])], axis=1)
    denom = b.op("GatherElements", [weight, end_index], axis=1)
    mean = b.op("Div", [numer, b.unsqueeze(b.op("Max", [denom, b.const(_TINY, np.float32)]), [2])])
    b.op("CastLike", [mean, x], outputs=["merged"])
    b.op("Identity", [start_index], outputs=["source_index"])
    return helper.make_function(
        MERGE_DOMAIN, MERGE_OP, [x, keys, received], ["merged", "source_index"], b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["ratio_numerator", "plugin_version", "plugin_namespace"],
    )


def weighted_merge_node(b: GraphBuilder, x: str, keys: str, received: str, ratio_numerator: int):
    """Emit one WeightedMerge call (named by the builder's current scope); returns (merged, source_index)."""
    return b.op(
        MERGE_OP, [x, keys, received], n_out=2, domain=MERGE_DOMAIN,
        ratio_numerator=int(ratio_numerator), plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE,
    )
