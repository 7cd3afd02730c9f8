"""ONNX Runtime backend: runs exported prefill/decode graphs over the shared CompactedKVCache.

Decode binds every layer's `past.{i}.*` input and `present.{i}.*` output to the *same* cache buffer through
IO binding, so ScatterElements writes the new entry in place and nothing copies the cache per step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from fastadasp.core.dtypes import precision, precision_of_torch
from fastadasp.core.errors import InvalidOption
from fastadasp.core.manifest import Manifest
from fastadasp.core.prompt import PromptInputs
from fastadasp.reduction.schedule import span_lengths_for_ratios
from fastadasp.runtime.backends.base import PrefillResult
from fastadasp.runtime.kv_cache import CompactedKVCache

# ONNX Runtime's CPU provider has no bf16 kernels for these graphs.
ONNXRUNTIME_PRECISIONS = ("fp32", "fp16")


def _session(path: str, threads: int | None, spin: bool = False, providers: Sequence[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Spinning worker threads keep a core busy after each run; next to PyTorch work in the same process (the
    # reference, the front-end) that slowed 8 PyTorch decode steps from 0.03 s to 5 s on 2 cores. Benchmarks
    # that only run ONNX Runtime turn it back on for latency.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=list(providers or ["CPUExecutionProvider"]))


class OnnxRuntimeBackend:
    """prefill.onnx + decode.onnx on ONNX Runtime's CPU execution provider, or the `providers` given.

    The cache stays in host memory and is bound as host buffers whatever the provider: with the CUDA provider
    ONNX Runtime copies it to the GPU and the written step back on every call (correct, not fast); the TensorRT
    backend keeps the cache on the device.
    """

    def __init__(self, prefill_path: str | os.PathLike, decode_path: str | os.PathLike | None, ratios,
                 num_kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float32, threads: int | None = None,
                 spin: bool = False, providers: Sequence[str] | None = None):
        self.prefill_session = _session(str(prefill_path), threads, spin, providers)
        self.decode_session = (_session(str(decode_path), threads, spin, providers) if decode_path is not None
                               else None)
        self.ratios = list(ratios)
        self.num_kv_heads, self.head_dim, self.dtype = num_kv_heads, head_dim, dtype
        self.np_dtype = precision_of_torch(dtype).numpy
        self.cache: CompactedKVCache | None = None
        self.lora_scale: np.ndarray | None = None
        self.output_names = [o.name for o in self.prefill_session.get_outputs()]
        self.needs_lora = any(i.name == "lora_scale" for i in self.prefill_session.get_inputs())

    @classmethod
    def from_export(cls, directory: str | os.PathLike, threads: int | None = None, spin: bool = False,
                    providers: Sequence[str] | None = None) -> "OnnxRuntimeBackend":
        """Open an export-engine output directory; the manifest is checked (version, file hashes) first."""
        manifest = Manifest.load(directory)
        args = manifest.model.args
        if manifest.dtype not in ONNXRUNTIME_PRECISIONS:
            raise InvalidOption(
                f"{directory} holds {manifest.dtype} graphs, which ONNX Runtime's CPU provider cannot run; "
                "use its TensorRT engines, or re-export with --dtype fp32 or fp16"
            )
        graphs = manifest.graphs
        return cls(
            os.path.join(directory, graphs["prefill"].file), os.path.join(directory, graphs["decode"].file),
            manifest.ratios, args.num_kv_heads, args.head_dim, precision(manifest.dtype).torch, threads, spin,
            providers,
        )

    def prefill(self, inputs: PromptInputs, max_new_tokens: int) -> PrefillResult:
        feed = {
            "prefix_ids": inputs.prefix_ids.numpy().astype(np.int64),
            "audio_embeds": inputs.audio_embeds.to(self.dtype).numpy(),
            "suffix_ids": inputs.suffix_ids.numpy().astype(np.int64),
        }
        if self.needs_lora:
            if inputs.lora_scale is None:
                raise ValueError("this graph was exported with prompt-aware LoRA: pass lora_scale [B, D]")
            feed["lora_scale"] = inputs.lora_scale.to(self.dtype).numpy()
            self.lora_scale = feed["lora_scale"]
        outputs = dict(zip(self.output_names, self.prefill_session.run(None, feed)))
        spans = span_lengths_for_ratios(self.ratios, inputs.audio_length)
        num_layers = len(self.ratios)
        lengths = [outputs[f"present.{i}.key"].shape[2] for i in range(num_layers)]
        self.cache = CompactedKVCache(lengths, inputs.batch_size, self.num_kv_heads, self.head_dim, max_new_tokens,
                                      dtype=self.dtype)
        for i in range(num_layers):
            self.cache.write_prefill(i, torch.from_numpy(outputs[f"present.{i}.key"]),
                                     torch.from_numpy(outputs[f"present.{i}.value"]))
        kept = {int(k.split(".")[1]): torch.from_numpy(v) for k, v in outputs.items() if k.startswith("merge.")}
        return PrefillResult(torch.from_numpy(outputs["logits"]), spans, inputs.total_length, kept)

    def decode(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        if self.decode_session is None:
            raise RuntimeError("no decode graph was given to this backend")
        self.cache.check_room(1)  # ScatterElements past the buffer would be ONNX Runtime's raw index error
        binding = self.decode_session.io_binding()
        ids = np.ascontiguousarray(input_ids.numpy().astype(np.int64))
        pos = np.ascontiguousarray(position_ids.numpy().astype(np.int64))
        lengths = np.asarray(self.cache.lengths, dtype=np.int64)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("position_ids", pos)
        binding.bind_cpu_input("cache_lengths", lengths)
        if self.lora_scale is not None:
            binding.bind_cpu_input("lora_scale", np.ascontiguousarray(self.lora_scale))
        for i, layer in enumerate(self.cache.layers):
            for kind, buffer in (("key", layer.key), ("value", layer.value)):
                shape, ptr = list(buffer.shape), buffer.data_ptr()
                binding.bind_input(f"past.{i}.{kind}", "cpu", 0, self.np_dtype, shape, ptr)
                binding.bind_output(f"present.{i}.{kind}", "cpu", 0, self.np_dtype, shape, ptr)
        binding.bind_output("logits", "cpu")
        self.decode_session.run_with_iobinding(binding)
        self.cache.advance(1)
        logits = binding.get_outputs()[-1].numpy()  # outputs come in bind order: logits was bound last
        return torch.from_numpy(logits.copy())

    def reorder(self, batch_index: torch.Tensor) -> None:
        self.cache.reorder(batch_index)
        if self.lora_scale is not None:
            self.lora_scale = self.lora_scale[batch_index.numpy()]

    def expand(self, repeats: int) -> None:
        self.reorder(self.cache.expansion_index(repeats))
