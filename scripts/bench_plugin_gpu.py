"""WeightedMerge CUDA kernels on a GPU: correctness against the CPU twin and the PyTorch reference for every dtype,
and the achieved memory bandwidth on a [1, 3000, 4096] fp16 span (WavLLM's 240 s of audio) as a fraction of the
GPU's peak, next to the PyTorch vectorised merge (fastadasp.reduction.weighted_merge_span) on the same GPU.

The kernels are called through the plugin library's C entry point (fastadasp_weighted_merge_enqueue), without
TensorRT, on PyTorch's stream; times are CUDA-event medians. Bytes counted are the minimum any implementation
must move: read x, keys and received once, write merged and source_index once. Writes JSON + Markdown.

    python scripts/bench_plugin_gpu.py --out bench/plugin_gpu      # needs a CUDA GPU and a CUDA build of torch

Without a GPU it prints one line saying so and exits with status 2.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
from pathlib import Path

import torch

from fastadasp.plugins import CpuTwin, build_plugin, merged_length
from fastadasp.reduction.merge import ratio_numerator, weighted_merge_span

DTYPES = {"fp32": (torch.float32, 0), "fp16": (torch.float16, 1), "bf16": (torch.bfloat16, 2)}
# Peak DRAM bandwidth (GB/s) by device-name fragment, for drivers / torch builds that do not report the memory
# clock and bus width. First match wins.
KNOWN_PEAKS_GBPS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100 NVL", 3900.0), ("H100", 3350.0),
                    ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0), ("L40S", 864.0),
                    ("L4", 300.0), ("A10G", 600.0), ("A10", 600.0), ("RTX 4090", 1008.0), ("RTX 3090", 936.0)]


def peak_bandwidth_gbps(props, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-gbps"
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if clock_khz and bus_bits:  # double data rate: two transfers per clock
        return 2.0 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "memory clock x bus width (device properties)"
    for fragment, gbps in KNOWN_PEAKS_GBPS:
        if fragment in props.name:
            return gbps, f"datasheet value for {fragment}"
    return None, "unknown (pass --peak-gbps)"


class Kernels:
    def __init__(self, library: Path):
        lib = ctypes.CDLL(str(library))
        lib.fastadasp_weighted_merge_enqueue.restype = ctypes.c_int32
        lib.fastadasp_weighted_merge_enqueue.argtypes = [ctypes.c_int32] + [ctypes.c_int64] * 4 + [ctypes.c_int32] \
            + [ctypes.c_void_p] * 6 + [ctypes.c_size_t, ctypes.c_void_p]
        lib.fastadasp_weighted_merge_workspace_bytes.restype = ctypes.c_size_t
        lib.fastadasp_weighted_merge_workspace_bytes.argtypes = [ctypes.c_int64, ctypes.c_int64]
        self.lib = lib

    def prepare(self, x, keys, q):
        batch, n, hidden = x.shape
        kept = n - merged_length(n, q)
        ws = self.lib.fastadasp_weighted_merge_workspace_bytes(batch, n)
        return (torch.empty(batch, kept, hidden, dtype=x.dtype, device=x.device),
                torch.empty(batch, kept, dtype=torch.int64, device=x.device),
                torch.empty(max(ws, 1), dtype=torch.uint8, device=x.device), ws)

    def __call__(self, x, keys, received, q, code, buffers):
        merged, source, workspace, ws = buffers
        batch, n, hidden = x.shape
        status = self.lib.fastadasp_weighted_merge_enqueue(
            code, batch, n, hidden, keys.shape[2], q, x.data_ptr(), keys.data_ptr(), received.data_ptr(),
            merged.data_ptr(), source.data_ptr(), workspace.data_ptr(), ws, torch.cuda.current_stream().cuda_stream)
        if status != 0:
            raise RuntimeError(f"fastadasp_weighted_merge_enqueue returned cudaError {status}")
        return merged, source


def time_ms(fn, reps: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def inputs(batch, n, hidden, key_dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, n, hidden, generator=g).to(dtype), torch.randn(batch, n, key_dim, generator=g).to(dtype),
            torch.rand(batch, n, generator=g) + 0.05)


def correctness(kernels: Kernels, twin: CpuTwin, shapes, ratio: float) -> list[dict]:
    rows = []
    q = ratio_numerator(ratio)
    for name, (dtype, code) in DTYPES.items():
        for batch, n, hidden, key_dim in shapes:
            x, keys, w = inputs(batch, n, hidden, key_dim, dtype, seed=n)
            xc, kc, wc = x.cuda(), keys.cuda(), w.cuda()
            merged, source = kernels(xc, kc, wc, q, code, kernels.prepare(xc, kc, q))
            torch.cuda.synchronize()
            tm, ts = twin.merge(x, keys, w, q)
            ref = weighted_merge_span(xc, kc, wc, merged_length(n, q))
            same_edges = torch.equal(ref.source_index.cpu(), source.cpu())
            rows.append({
                "dtype": name, "shape": [batch, n, hidden, key_dim], "ratio_numerator": q,
                "twin_bit_identical": bool(torch.equal(merged.cpu().view(torch.uint8), tm.view(torch.uint8))),
                "twin_source_equal": bool(torch.equal(source.cpu(), ts)),
                "twin_max_abs_diff": float((merged.cpu().float() - tm.float()).abs().max()) if tm.numel() else 0.0,
                "reference_same_edges": bool(same_edges),
                "reference_max_abs_diff":
                    float((merged.float() - ref.tokens.float()).abs().max()) if same_edges else None,
            })
    return rows


def bandwidth(kernels: Kernels, batch, n, hidden, key_dim, ratio, reps, peak) -> list[dict]:
    q = ratio_numerator(ratio)
    m = merged_length(n, q)
    rows = []
    for name, (dtype, code) in DTYPES.items():
        x, keys, w = (t.cuda() for t in inputs(batch, n, hidden, key_dim, dtype))
        e = x.element_size()
        moved = batch * n * (hidden + key_dim) * e + batch * n * 4 + batch * (n - m) * (hidden * e + 8)
        buffers = kernels.prepare(x, keys, q)
        kernel_ms = time_ms(lambda: kernels(x, keys, w, q, code, buffers), reps)
        torch_ms = time_ms(lambda: weighted_merge_span(x, keys, w, m), reps)
        copy_ms = time_ms(lambda: x.clone(), reps)  # what a plain read + write of x achieves on this GPU
        copy_gbps = 2 * x.numel() * e / copy_ms / 1e6
        row = {"dtype": name, "shape": [batch, n, hidden], "key_dim": key_dim, "ratio_numerator": q, "merged": m,
               "bytes_moved": moved, "kernel_ms": kernel_ms, "kernel_gbps": moved / kernel_ms / 1e6,
               "pytorch_ms": torch_ms, "pytorch_gbps": moved / torch_ms / 1e6,
               "speedup_vs_pytorch": torch_ms / kernel_ms,
               "copy_gbps": copy_gbps}
        if peak:
            row["kernel_fraction_of_peak"] = row["kernel_gbps"] / peak
            row["pytorch_fraction_of_peak"] = row["pytorch_gbps"] / peak
            row["copy_fraction_of_peak"] = copy_gbps / peak
        rows.append(row)
    return rows


def markdown(report: dict) -> str:
    gpu = report["gpu"]
    lines = [f"# WeightedMerge kernels on {gpu['name']} (sm{gpu['capability']})", "",
             f"Peak DRAM bandwidth: {gpu['peak_gbps'] or 'unknown'} GB/s ({gpu['peak_source']}). Library sha256 "
             f"`{report['library_sha256'][:16]}`.", "",
             "## Bandwidth", "",
             "| dtype | span | key dim | kernel ms | kernel GB/s | % peak | PyTorch ms | PyTorch GB/s | speedup "
             "| copy GB/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["bandwidth"]:
        frac = f"{100 * r['kernel_fraction_of_peak']:.0f}%" if "kernel_fraction_of_peak" in r else "?"
        lines.append(f"| {r['dtype']} | {r['shape']} | {r['key_dim']} | {r['kernel_ms']:.4f} | "
                     f"{r['kernel_gbps']:.0f} | "
                     f"{frac} | {r['pytorch_ms']:.3f} | {r['pytorch_gbps']:.0f} | {r['speedup_vs_pytorch']:.1f}x | "
                     f"{r['copy_gbps']:.0f} |")
    lines += ["", "## Correctness", "",
              "| dtype | [B, n, D, K] | bit-identical to CPU twin | same source_index | PyTorch same edges "
              "| max abs diff vs PyTorch |",
              "|---|---|---|---|---|---|"]
    for r in report["correctness"]:
        diff = "n/a (near-tie)" if r["reference_max_abs_diff"] is None else f"{r['reference_max_abs_diff']:.2e}"
        lines.append(f"| {r['dtype']} | {r['shape']} | {r['twin_bit_identical']} | {r['twin_source_equal']} | "
                     f"{r['reference_same_edges']} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench/plugin_gpu", help="output prefix: writes OUT.json and OUT.md")
    p.add_argument("--tokens", type=int, default=3000)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--key-dim", type=int, default=4096, help="K = KV heads x head dim (LLaMA-2-7B: 32 x 128)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--peak-gbps", type=float, default=None, help="override the GPU's peak DRAM bandwidth")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"bench_plugin_gpu: no CUDA GPU visible to torch {torch.__version__} "
              f"(CUDA build: {torch.version.cuda or 'no'}); nothing measured", file=sys.stderr)
        return 2
    build = build_plugin(progress=lambda m: print(m, file=sys.stderr))
    kernels, twin = Kernels(build.library), CpuTwin(build.cpu_library)
    props = torch.cuda.get_device_properties(0)
    peak, source = peak_bandwidth_gbps(props, args.peak_gbps)
    shapes = [(2, 300, 256, 128), (1, args.tokens, args.hidden, 1024), (2, 5000, 64, 64)]
    report = {
        "gpu": {"name": props.name, "capability": f"{props.major}{props.minor}", "peak_gbps": peak,
                "peak_source": source},
        "torch": torch.__version__, "library": str(build.library), "library_sha256": build.sha256,
        "correctness": correctness(kernels, twin, shapes, args.ratio),
        "bandwidth": bandwidth(kernels, 1, args.tokens, args.hidden, args.key_dim, args.ratio, args.reps, peak),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    bad = [r for r in report["correctness"] if not (r["twin_bit_identical"] and r["twin_source_equal"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
