"""One table for the precisions every stage names: torch, numpy, ONNX and TensorRT spellings."""

from __future__ import annotations

from dataclasses import dataclass

from fastadasp.core.choices import PRECISIONS
from fastadasp.core.errors import InvalidOption


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "fp16" | "bf16" (what users and the manifest write)
    torch_name: str  # attribute of the torch module
    numpy_name: str  # numpy / ml_dtypes type name, as ONNX tools print it
    onnx_elem_type: int  # onnx.TensorProto data type
    tensorrt_name: str  # tensorrt.DataType member

    @property
    def torch(self):
        import torch

        return getattr(torch, self.torch_name)

    @property
    def numpy(self):
        import numpy as np

        if self.numpy_name == "bfloat16":
            import ml_dtypes  # ships with onnx; numpy has no bfloat16 of its own

            return ml_dtypes.bfloat16
        return np.dtype(self.numpy_name).type


# onnx.TensorProto: FLOAT = 1, FLOAT16 = 10, BFLOAT16 = 16 (fixed by the ONNX spec).
_TABLE = {
    "fp32": Precision("fp32", "float32", "float32", 1, "FLOAT"),
    "fp16": Precision("fp16", "float16", "float16", 10, "HALF"),
    "bf16": Precision("bf16", "bfloat16", "bfloat16", 16, "BF16"),
}
assert tuple(_TABLE) == PRECISIONS


def precision(name: str) -> Precision:
    if name not in _TABLE:
        raise InvalidOption(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return _TABLE[name]


def precision_of_torch(dtype) -> Precision:
    for p in _TABLE.values():
        if p.torch == dtype:
            return p
    raise InvalidOption(f"dtype {dtype} is not one of the supported precisions ({', '.join(PRECISIONS)})")


def precision_of_tensorrt(name: str) -> Precision | None:
    for p in _TABLE.values():
        if p.tensorrt_name == name:
            return p
    return None
