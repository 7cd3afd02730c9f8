"""The CUDA kernels themselves, on a GPU: bit-for-bit equal to the CPU twin (same per-element functions, same
order) and within the supported.json tolerances of the PyTorch reference. Skipped without a CUDA GPU.

The kernels are called through the library's C entry point fastadasp_weighted_merge_enqueue (no TensorRT), on
PyTorch's current stream."""

from __future__ import annotations

import ctypes

import pytest
import torch

from fastadasp.plugins import merged_length
from fastadasp.reduction.merge import ratio_numerator, weighted_merge_span

pytestmark = pytest.mark.gpu

DTYPES = {"fp32": (torch.float32, 0), "fp16": (torch.float16, 1), "bf16": (torch.bfloat16, 2)}


@pytest.fixture(scope="module")
def kernels(plugin_build):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU (torch.cuda.is_available() is False)")
    lib = ctypes.CDLL(str(plugin_build.library))
    lib.fastadasp_weighted_merge_enqueue.restype = ctypes.c_int32
    lib.fastadasp_weighted_merge_enqueue.argtypes = [ctypes.c_int32] + [ctypes.c_int64] * 4 + [ctypes.c_int32] + \
        [ctypes.c_void_p] * 6 + [ctypes.c_size_t, ctypes.c_void_p]
    lib.fastadasp_weighted_merge_workspace_bytes.restype = ctypes.c_size_t
    lib.fastadasp_weighted_merge_workspace_bytes.argtypes = [ctypes.c_int64, ctypes.c_int64]

    def run(x, keys, received, q, type_code):
        batch, n, hidden = x.shape
        kept = n - merged_length(n, q)
        merged = torch.empty(batch, kept, hidden, dtype=x.dtype, device=x.device)
        source = torch.empty(batch, kept, dtype=torch.int64, device=x.device)
        ws_bytes = lib.fastadasp_weighted_merge_workspace_bytes(batch, n)
        workspace = torch.empty(ws_bytes, dtype=torch.uint8, device=x.device)
        status = lib.fastadasp_weighted_merge_enqueue(
            type_code, batch, n, hidden, keys.shape[2], q, x.data_ptr(), keys.data_ptr(), received.data_ptr(),
            merged.data_ptr(), source.data_ptr(), workspace.data_ptr(), ws_bytes,
            torch.cuda.current_stream().cuda_stream)
        assert status == 0, f"cudaError {status}"
        torch.cuda.synchronize()
        return merged, source

    return run


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch,n,hidden,key_dim,ratio", [
    (1, 1, 8, 8, 0.5), (2, 37, 24, 40, 0.37), (3, 300, 64, 128, 0.5), (1, 3000, 4096, 1024, 0.5),
    (2, 4096, 32, 16, 0.9), (2, 4097, 32, 16, 0.3), (1, 8192, 16, 64, 0.6),  # block select / device sort paths
    (2, 50, 7, 5, 0.4), (2, 64, 16, 32, 0.0)])                               # scalar loads; no merge
def test_kernels_equal_cpu_twin_and_reference(kernels, cpu_twin, supported, dtype, batch, n, hidden, key_dim, ratio):
    t, code = DTYPES[dtype]
    g = torch.Generator().manual_seed(n * 7 + hidden)
    x = torch.randn(batch, n, hidden, generator=g).to(t)
    keys = torch.randn(batch, n, key_dim, generator=g).to(t)
    received = torch.rand(batch, n, generator=g) + 0.05
    q = ratio_numerator(ratio)
    merged, source = kernels(x.cuda(), keys.cuda(), received.cuda(), q, code)
    twin_merged, twin_source = cpu_twin.merge(x, keys, received, q)
    assert torch.equal(source.cpu(), twin_source)
    assert torch.equal(merged.cpu().view(torch.uint8), twin_merged.view(torch.uint8)), "not bit-identical to the twin"
    ref = weighted_merge_span(x.cuda(), keys.cuda(), received.cuda(), merged_length(n, q))
    tol = supported["tolerances"][dtype]
    if torch.equal(ref.source_index.cpu(), source.cpu()):  # near-ties may pick other edges in PyTorch's order
        torch.testing.assert_close(merged.float(), ref.tokens.float(), rtol=tol["rtol"], atol=tol["atol"])
