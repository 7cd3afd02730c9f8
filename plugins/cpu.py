"""The CPU twin of the WeightedMerge kernels, called through ctypes.

    twin = CpuTwin(build.cpu_library)
    merged, source_index = twin.merge(x, keys, received, ratio_numerator)

``x``/``keys`` are numpy arrays (float32, float16, or bfloat16 given as raw uint16 bits with ``dtype="bf16"``) or
torch tensors of any of the three float types; ``received`` is float32. Results come back in the input's kind
(numpy or torch). The twin runs the kernels' stages in the kernels' index order with the same per-element
functions (plugins/weighted_merge/weightedMergeMath.h), so it predicts what the GPU computes.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastadasp.reduction.merge import RATIO_DENOMINATOR

__all__ = ["CpuTwin", "ELEMENT_TYPES", "merged_length"]

# dtype name -> the ElementType code of weightedMergeMath.h
ELEMENT_TYPES = {"fp32": 0, "fp16": 1, "bf16": 2}


def merged_length(n: int, q: int) -> int:
    """Edges merged in a span of n tokens: m = min(n * q // 2^16, max(n - 1, 0)) (every stage's rule)."""
    if n <= 1 or q <= 0:
        return 0
    return min(n * q // RATIO_DENOMINATOR, n - 1)


def _torch_kind(t) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[t.dtype]


class CpuTwin:
    def __init__(self, library: str | os.PathLike):
        self.library = Path(library)
        lib = ctypes.CDLL(str(self.library))
        i64, i32, vp = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
        lib.fastadasp_wm_num_merged.argtypes = [i64, i64]
        lib.fastadasp_wm_num_merged.restype = i64
        lib.fastadasp_wm_cpu_merge.argtypes = [i32, i64, i64, i64, i64, i32, vp, vp, vp, vp, vp]
        lib.fastadasp_wm_cpu_merge.restype = ctypes.c_int
        lib.fastadasp_wm_cpu_similarity.argtypes = [i32, i64, i64, i64, vp, vp]
        lib.fastadasp_wm_cpu_similarity.restype = ctypes.c_int
        lib.fastadasp_wm_cpu_from_float.argtypes = [i32, vp, vp, i64]
        lib.fastadasp_wm_cpu_from_float.restype = ctypes.c_int
        lib.fastadasp_wm_cpu_to_float.argtypes = [i32, vp, vp, i64]
        lib.fastadasp_wm_cpu_to_float.restype = ctypes.c_int
        lib.fastadasp_wm_cpu_last_error.argtypes = []
        lib.fastadasp_wm_cpu_last_error.restype = ctypes.c_char_p
        self._lib = lib

    # ------------------------------------------------------------------ helpers

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what}: {self._lib.fastadasp_wm_cpu_last_error().decode()}")

    @staticmethod
    def _as_numpy(a: Any, kind: str | None) -> tuple[np.ndarray, str, bool]:
        """(C-contiguous array with the raw element bytes, dtype name, came from torch)."""
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency of the package
            torch = None
        if torch is not None and isinstance(a, torch.Tensor):
            name = _torch_kind(a)
            t = a.detach().cpu().contiguous()
            arr = t.view(torch.int16).numpy().view(np.uint16) if name == "bf16" else t.numpy()
            return np.ascontiguousarray(arr), name, True
        arr = np.ascontiguousarray(a)
        if kind is None:
            kind = {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16"}.get(arr.dtype)
            if kind is None:
                raise TypeError(f"cannot tell the element type of a {arr.dtype} array; pass dtype='bf16' for raw bits")
        if kind == "bf16" and arr.dtype != np.uint16:
            raise TypeError("bf16 numpy input must be raw uint16 bits")
        return arr, kind, False

    @staticmethod
    def _to_output(arr: np.ndarray, kind: str, as_torch: bool):
        if not as_torch:
            return arr
        import torch

        t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if kind == "bf16" else t

    # ------------------------------------------------------------------ API

    def num_merged(self, n: int, q: int) -> int:
        return int(self._lib.fastadasp_wm_num_merged(n, q))

    def merge(self, x, keys, received, ratio_numerator: int, *, dtype: str | None = None):
        """(merged [B, n - m, D], source_index [B, n - m] int64) exactly as the kernels would compute them."""
        xa, kind, as_torch = self._as_numpy(x, dtype)
        ka, key_kind, _ = self._as_numpy(keys, dtype or kind)
        if key_kind != kind:
            raise TypeError(f"keys must have x's type ({kind}), got {key_kind}")
        ra, _, _ = self._as_numpy(received, "fp32")
        ra = np.ascontiguousarray(ra, dtype=np.float32)
        batch, n, hidden = xa.shape
        if ka.shape[:2] != (batch, n) or ra.shape != (batch, n):
            raise ValueError(f"keys [B, n, K] and received [B, n] must match x {xa.shape}: {ka.shape}, {ra.shape}")
        kept = n - merged_length(n, int(ratio_numerator))
        merged = np.empty((batch, kept, hidden), dtype=xa.dtype)
        source = np.empty((batch, kept), dtype=np.int64)
        status = self._lib.fastadasp_wm_cpu_merge(
            ELEMENT_TYPES[kind], batch, n, hidden, ka.shape[2], int(ratio_numerator), xa.ctypes.data, ka.ctypes.data,
            ra.ctypes.data, merged.ctypes.data, source.ctypes.data)
        self._check(status, "fastadasp_wm_cpu_merge")
        if as_torch:
            import torch

            return self._to_output(merged, kind, True), torch.from_numpy(source)
        return merged, source

    def similarity(self, keys, *, dtype: str | None = None) -> np.ndarray:
        """The fp32 adjacent-key cosines the kernels rank, [B, n - 1]."""
        ka, kind, _ = self._as_numpy(keys, dtype)
        batch, n, key_dim = ka.shape
        out = np.empty((batch, max(n - 1, 0)), dtype=np.float32)
        self._check(self._lib.fastadasp_wm_cpu_similarity(ELEMENT_TYPES[kind], batch, n, key_dim, ka.ctypes.data,
                                                          out.ctypes.data), "fastadasp_wm_cpu_similarity")
        return out

    def from_float(self, values: np.ndarray, kind: str) -> np.ndarray:
        """fp32 -> fp16/bf16 bits (uint16) with the kernels' rounding."""
        src = np.ascontiguousarray(values, dtype=np.float32)
        out = np.empty(src.shape, dtype=np.uint16)
        self._check(self._lib.fastadasp_wm_cpu_from_float(ELEMENT_TYPES[kind], src.ctypes.data, out.ctypes.data,
                                                          src.size), "fastadasp_wm_cpu_from_float")
        return out

    def to_float(self, bits: np.ndarray, kind: str) -> np.ndarray:
        src = np.ascontiguousarray(bits, dtype=np.uint16)
        out = np.empty(src.shape, dtype=np.float32)
        self._check(self._lib.fastadasp_wm_cpu_to_float(ELEMENT_TYPES[kind], src.ctypes.data, out.ctypes.data,
                                                        src.size), "fastadasp_wm_cpu_to_float")
        return out
