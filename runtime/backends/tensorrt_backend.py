"""TensorRT backend: the export's prefill and decode engines over a device-resident CompactedKVCache.

`TensorRTBackend.from_export(dir)` picks the manifest's engine entry for this GPU and toolkit
(runtime/backends/tensorrt_selection.py), registers the entry's plugin libraries, then deserialises one engine per role, each with one execution context.

Every engine call follows TensorRT's execution contract: each input shape is checked against the engine's
optimization profile (one line naming the option to change when it is outside) and set with `set_input_shape`,
every I/O tensor is bound with `set_tensor_address`, and `execute_async_v3` runs on the backend's one CUDA
stream. Decode binds `present.{i}.*` to the address of `past.{i}.*`, so the graph's ScatterElements writes
the step into the cache buffer itself (no per-step copy of the cache). Beam reorders gather cache rows on the
device, and logits stay on the device: the generation loop reads back only what it decides on.

TensorRT is never imported here: the caller passes the `tensorrt` (10/11) or `tensorrt_rtx` module, whose
Python APIs use the same names, or `from_export` loads one through fastadasp.engines.toolkit. So this module
imports anywhere; tests run it against a TensorRT-shaped fake that executes the graphs with ONNX Runtime on
host memory (tests/runtime/fake_tensorrt_runtime.py) and check every TensorRT name used here against the installed
bindings (tests/runtime/test_tensorrt_api.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from fastadasp.core.errors import UserError
from fastadasp.core.manifest import EngineEntry, Manifest
from fastadasp.core.prompt import PromptInputs
from fastadasp.engines.network import make_logger
from fastadasp.engines.toolkit import normalize_compute_capability
from fastadasp.reduction.schedule import span_lengths_for_ratios
from fastadasp.runtime.backends.base import PrefillResult
from fastadasp.runtime.backends.tensorrt_selection import (
    EngineLoadError,
    Toolkit,
    choose_engine_entry,
    load_toolkits,
    toolkit_version,
)
from fastadasp.runtime.kv_cache import CompactedKVCache
from fastadasp.runtime.reference import prefill_lengths

if TYPE_CHECKING:  # annotations only: the module itself is passed in at run time
    import tensorrt as trt

log = logging.getLogger("fastadasp.runtime")

__all__ = [
    "DeviceAllocator",
    "DeviceKVCache",
    "EngineLimitError",
    "EngineRunError",
    "TensorRTBackend",
    "TorchAllocator",
]

Shape = tuple[int, ...]

ROLES = ("prefill", "decode")

# TensorRT DataType member name -> torch dtype of the buffer bound to such a tensor.
_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}


# --------------------------------------------------------------------------------------------- errors


class EngineLimitError(UserError, ValueError):
    """A request outside what the engines' optimization profiles admit; one line naming the option to change."""


class EngineRunError(RuntimeError):
    """TensorRT refused a call the backend had already checked (a broken engine or a bug); carries what TensorRT
    logged."""


# --------------------------------------------------------------------------------------------- device memory


class DeviceAllocator(Protocol):
    """Where every buffer bound to an engine comes from (inputs, outputs, the KV cache)."""

    def empty(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor: ...


class TorchAllocator:
    """torch's caching allocator: on CUDA, blocks are reused on the stream that allocated them."""

    def empty(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(tuple(shape), dtype=dtype, device=device)


class DeviceKVCache(CompactedKVCache):
    """A CompactedKVCache whose per-layer buffers come from the backend's allocator, on the engine's device.

    The base class lays out the bookkeeping on the "meta" device (no memory); each layer's key and value buffer
    is then allocated once with that layer's capacity. Buffers start zeroed: attention masks the entries past a
    layer's length, but a masked NaN from uninitialised memory would still poison the weighted sum.
    """

    def __init__(self, prefill_lengths: list[int], batch_size: int, num_kv_heads: int, head_dim: int,
                 max_new_tokens: int, *, dtype: torch.dtype, device: torch.device, allocator: DeviceAllocator):
        super().__init__(prefill_lengths, batch_size, num_kv_heads, head_dim, max_new_tokens, dtype=dtype,
                         device="meta")
        self.allocator, self.buffer_device = allocator, torch.device(device)
        for layer in self.layers:
            layer.key = self._zeros(layer.key.shape, dtype)
            layer.value = self._zeros(layer.value.shape, dtype)

    def _zeros(self, shape, dtype) -> torch.Tensor:
        return self.allocator.empty(tuple(shape), dtype, self.buffer_device).zero_()

    def _gather(self, buffer: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        out = self.allocator.empty((batch_index.shape[0], *buffer.shape[1:]), buffer.dtype, buffer.device)
        return torch.index_select(buffer, 0, batch_index, out=out)

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Row i of every layer becomes old row batch_index[i]: a gather on the device, into new buffers of the
        same capacity (the next decode binds their addresses)."""
        batch_index = batch_index.to(self.buffer_device)
        for layer in self.layers:
            layer.key = self._gather(layer.key, batch_index)
            layer.value = self._gather(layer.value, batch_index)
        self.batch_size = int(batch_index.shape[0])


# --------------------------------------------------------------------------------------------- stream


class _Stream:
    """The one stream every engine call and cache operation of a backend runs on.

    On CUDA, work enters after what the caller's stream has queued (its tensors are inputs), and the caller's
    stream waits for ours before it reads what we return. A device of "cpu" (host memory standing in for device
    memory, for tests) has no stream: handle 0 and nothing to order.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    @property
    def handle(self) -> int:
        return int(self.cuda.cuda_stream) if self.cuda is not None else 0

    @contextlib.contextmanager
    def scope(self, *incoming: torch.Tensor | None) -> Iterator[None]:
        if self.cuda is None:
            yield
            return
        caller = torch.cuda.current_stream(self.device)
        self.cuda.wait_stream(caller)
        for tensor in incoming:
            if tensor is not None and tensor.is_cuda:
                tensor.record_stream(self.cuda)  # the caller may free it while our stream still reads it
        with torch.cuda.stream(self.cuda):
            yield
        caller.wait_stream(self.cuda)

    def hand_out(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor made on our stream that the caller's stream goes on using."""
        if self.cuda is not None and tensor.is_cuda:
            tensor.record_stream(torch.cuda.current_stream(self.device))
        return tensor

    def synchronize(self) -> None:
        if self.cuda is not None:
            self.cuda.synchronize()


# --------------------------------------------------------------------------------------------- GPU


def _gpu(device: torch.device) -> tuple[str | None, str | None]:
    if device.type != "cuda":
        return None, None
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def _default_device() -> torch.device:
    if not torch.cuda.is_available():
        raise EngineLoadError(f"TensorRT engines run on a CUDA GPU, but torch {torch.__version__} sees none (no GPU, "
                              "no driver, or a CPU build of torch); use the onnxruntime or torch backend",
                              summary=f"no CUDA GPU (torch {torch.__version__} sees none)")
    return torch.device("cuda", torch.cuda.current_device())


# --------------------------------------------------------------------------------------------- one engine


@dataclass(frozen=True)
class _Tensor:
    """What a binding needs to know about one I/O tensor of an engine."""

    name: str
    is_input: bool
    dtype: torch.dtype
    on_host: bool  # TensorLocation.HOST: TensorRT reads it from host memory
    profile: tuple[Shape, Shape, Shape] | None  # inputs: (min, opt, max) of optimization profile 0


def _limit_hint(name: str, dim: int) -> str:
    if dim == 0:
        return "rows per call are batch x beams: use fewer, or re-export with a larger --max-batch"
    if name in ("prefix_ids", "suffix_ids"):
        return "re-export with a larger --max-text-tokens"
    if name == "audio_embeds" and dim == 1:
        return "re-export with a wider --audio-tokens-range"
    if name.startswith("past.") and dim == 2:
        return "ask for fewer new tokens (--max-new-tokens), or re-export with larger --max-new-tokens / --max-text-tokens"
    return "re-export with limits that cover this request"


class _EngineRunner:
    """One deserialised engine, its one execution context, and the buffers its last call uses."""

    def __init__(self, trt: Any, runtime: trt.Runtime, logger, role: str, path: Path):
        self.trt, self.logger, self.role, self.file = trt, logger, role, path.name
        # TensorRT reads and writes the bound buffers after execute_async_v3 returns: they stay referenced here
        # until the next call (by then the stream has ordered every use of them).
        self._bound: tuple[dict, dict] = ({}, {})
        engine: trt.ICudaEngine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineLoadError(f"cannot deserialise {path} with {getattr(trt, '__name__', 'TensorRT')} "
                                  f"{toolkit_version(trt)} ({logger.take()}); rebuild the engines with export-engine")
        self.tensors = self._describe(engine)
        self.inputs = {n: t for n, t in self.tensors.items() if t.is_input}
        self.outputs = {n: t for n, t in self.tensors.items() if not t.is_input}
        context: trt.IExecutionContext = engine.create_execution_context()
        if context is None:
            raise EngineLoadError(f"cannot create an execution context for {path} ({logger.take()}); "
                                  "is the GPU out of memory?")
        # Set last and in this order: attributes are released in the order they were set, and TensorRT wants the
        # context gone before its engine, and the engine before the runtime that deserialised it.
        self.context = context
        self.engine = engine
        self.runtime = runtime

    def _describe(self, engine: trt.ICudaEngine) -> dict[str, _Tensor]:
        tensors = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            type_name = engine.get_tensor_dtype(name).name
            if type_name not in _TORCH_DTYPES:
                raise EngineLoadError(f"{self.file}: tensor {name} has TensorRT type {type_name}, which this runtime "
                                      "cannot bind; re-export the graphs with this fastadasp")
            on_host = engine.get_tensor_location(name) == self.trt.TensorLocation.HOST
            profile = None
            if is_input:
                profile = tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, 0))
            tensors[name] = _Tensor(name, is_input, _TORCH_DTYPES[type_name], on_host, profile)
        return tensors

    def max_dim(self, name: str, dim: int) -> int:
        return self.inputs[name].profile[2][dim]

    def check_shapes(self, shapes: dict[str, Shape]) -> None:
        """EngineLimitError (one line naming the option) unless every shape lies inside the profile."""
        for name, shape in shapes.items():
            lo, _, hi = self.inputs[name].profile
            if len(shape) != len(lo):
                raise EngineRunError(f"{self.file}: {name} has rank {len(shape)}, the engine takes rank {len(lo)}")
            for dim, (value, a, b) in enumerate(zip(shape, lo, hi)):
                if not a <= value <= b:
                    raise EngineLimitError(f"{self.file} takes {name} with dimension {dim} in {a}..{b}, this request "
                                           f"has {value}; {_limit_hint(name, dim)}")

    def run(self, inputs: dict[str, torch.Tensor], bound_outputs: dict[str, torch.Tensor], stream: _Stream,
            allocate) -> dict[str, torch.Tensor]:
        """Set every input shape, bind every I/O tensor, enqueue on `stream`; returns the output buffers.

        `bound_outputs` names outputs that must land in given buffers (decode's present = past); the others are
        allocated with the shapes TensorRT infers from the input shapes.
        """
        missing, extra = sorted(set(self.inputs) - set(inputs)), sorted(set(inputs) - set(self.inputs))
        if missing or extra:
            raise EngineRunError(f"{self.file}: inputs missing {missing}, not in the engine {extra}")
        self.check_shapes({name: tuple(t.shape) for name, t in inputs.items()})
        context = self.context
        for name, tensor in inputs.items():
            self._check_buffer(name, tensor)
            if not context.set_input_shape(name, tuple(tensor.shape)):
                raise EngineRunError(f"{self.file}: set_input_shape({name}, {tuple(tensor.shape)}) refused: "
                                     f"{self.logger.take()}")
        outputs = {}
        for name, info in self.outputs.items():
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineRunError(f"{self.file}: output {name} has shape {shape} after every input shape was set; "
                                     "its size depends on data, which these graphs never do: rebuild the engine")
            tensor = bound_outputs.get(name)
            if tensor is None:
                tensor = allocate(shape, info)
            elif tuple(tensor.shape) != shape:
                raise EngineRunError(f"{self.file}: output {name} is {shape} but its buffer is {tuple(tensor.shape)}")
            self._check_buffer(name, tensor)
            outputs[name] = tensor
        for name, tensor in (*inputs.items(), *outputs.items()):
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise EngineRunError(f"{self.file}: set_tensor_address({name}) refused: {self.logger.take()}")
        self._bound = (inputs, outputs)
        if not context.execute_async_v3(stream.handle):
            raise EngineRunError(f"{self.file}: execute_async_v3 failed: {self.logger.take()}")
        return outputs

    def _check_buffer(self, name: str, tensor: torch.Tensor) -> None:
        info = self.tensors[name]
        if tensor.dtype != info.dtype or not tensor.is_contiguous() or (info.on_host and tensor.is_cuda):
            raise EngineRunError(f"{self.file}: {name} needs a contiguous {info.dtype} buffer in "
                                 f"{'host' if info.on_host else 'device'} memory, got {tensor.dtype} on {tensor.device}")

    def close(self) -> None:
        self._bound = ({}, {})
        self.context = None  # before its engine, as TensorRT requires
        self.engine = None
        self.runtime = None


# --------------------------------------------------------------------------------------------- the backend


class TensorRTBackend:
    """prefill / decode / reorder / expand over an export's TensorRT engines (see the module docstring)."""

    def __init__(self, toolkit: Toolkit, directory: str | os.PathLike, manifest: Manifest, entry_key: str,
                 entry: EngineEntry, *, device: torch.device | str, allocator: DeviceAllocator | None = None):
        self.toolkit, self.trt = toolkit, toolkit.module
        self.directory, self.manifest, self.entry_key, self.entry = Path(directory), manifest, entry_key, entry
        self.device = torch.device(device)
        self.allocator = allocator or TorchAllocator()
        self.ratios = list(manifest.ratios)
        args = manifest.model.args
        self.num_kv_heads, self.head_dim = args.num_kv_heads, args.head_dim
        missing = [role for role in ROLES if role not in entry.graphs]
        if missing:
            raise EngineLoadError(f"engine entry {entry_key} in {directory} has no {' or '.join(missing)} engine; "
                                  "re-run export-engine")
        # A subset of the manifest names just these engines: verify only the files this backend reads (hashing
        # every other target's engines and the ONNX graphs would only cost time).
        dataclasses.replace(manifest, graphs={}, engines={entry_key: entry}).verify_files(directory)
        self._load_plugins()
        self.logger = make_logger(self.trt)
        self.runtime: trt.Runtime = self.trt.Runtime(self.logger)
        self.stream = _Stream(self.device)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                runners = {role: self._runner(role) for role in ROLES}
        else:
            runners = {role: self._runner(role) for role in ROLES}
        self._prefill, self._decode = runners["prefill"], runners["decode"]
        self.needs_lora = "lora_scale" in self._prefill.inputs
        self.kv_dtype = self._decode.inputs["past.0.key"].dtype
        self.cache: DeviceKVCache | None = None
        self.lora_scale: torch.Tensor | None = None
        self._cache_lengths: torch.Tensor | None = None  # cache.lengths on the engine's side, advanced there

    def _runner(self, role: str) -> _EngineRunner:
        return _EngineRunner(self.trt, self.runtime, self.logger, role, self.directory / self.entry.graphs[role].file)

    @property
    def contexts(self) -> dict[str, Any]:
        """role -> its execution context (for inspection; the backend owns and drives them)."""
        return {"prefill": self._prefill.context, "decode": self._decode.context}

    @property
    def description(self) -> str:
        gpu, cc = _gpu(self.device)
        where = f"{gpu} (compute capability {cc})" if gpu else str(self.device)
        return f"{self.toolkit} engines {self.entry_key} on {where}"

    # ---------------------------------------------------------------- opening an export
    @classmethod
    def from_export(cls, directory: str | os.PathLike, *, flavor: str | None = None, trt: Any = None,
                    compute_capability: str | None = None, device: torch.device | str | None = None,
                    allocator: DeviceAllocator | None = None) -> "TensorRTBackend":
        """Open an export-engine directory with the engines for this GPU and toolkit.

        `trt`: the TensorRT module to use (default: load TensorRT, then TensorRT-RTX, keeping each that loads;
        `flavor` or $FASTADASP_TENSORRT_FLAVOR restricts the choice). `device`: the CUDA device (default: the
        current one); "cpu" runs on host memory, which only a stand-in for TensorRT can do, and then
        `compute_capability` names the GPU to pick engines for. `allocator`: where bound buffers come from.
        """
        manifest = Manifest.load(directory, verify_hashes=False)
        toolkits = [Toolkit.of(trt, flavor)] if trt is not None else load_toolkits(flavor)
        device = torch.device(device) if device is not None else _default_device()
        gpu_name, cc = _gpu(device)
        if compute_capability is not None:
            cc = normalize_compute_capability(compute_capability, "compute_capability")
        key, entry, toolkit = choose_engine_entry(manifest, directory, toolkits, cc, gpu_name)
        log.info("TensorRT engines %s for compute capability %s", key, cc)
        return cls(toolkit, directory, manifest, key, entry, device=device, allocator=allocator)

    def _load_plugins(self) -> None:
        """Register the entry's plugin libraries before any engine is deserialised (an engine that uses a
        plugin cannot be deserialised without its creator). The file must be the one the engines were built with."""
        from fastadasp.core.files import sha256_file
        from fastadasp import plugins

        for library in self.entry.plugin_libraries:
            path = Path(library.file)
            if not path.is_file():
                raise EngineLoadError(f"the engines {self.entry_key} need the plugin library {path}, which is missing; "
                                      "build it with `fastadasp build-plugin` and re-run export-engine")
            if sha256_file(path) != library.sha256:
                raise EngineLoadError(f"plugin library {path} differs from the one the engines {self.entry_key} were "
                                      "built with; re-run export-engine to rebuild them with it")
            plugins.load_into_registry(self.trt, path)

    def synchronize(self) -> None:
        """Wait until every call queued so far has finished (for timing: calls return once queued)."""
        self.stream.synchronize()

    def close(self) -> None:
        """Release the contexts, engines and runtime now, in the order TensorRT requires (also done at exit)."""
        self.stream.synchronize()
        self.cache = None
        for runner in (self._decode, self._prefill):
            runner.close()
        self.runtime = None

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- buffers
    def _allocate(self, shape: Sequence[int], info: _Tensor) -> torch.Tensor:
        return self.allocator.empty(tuple(shape), info.dtype, torch.device("cpu") if info.on_host else self.device)

    def _stage(self, runner: _EngineRunner, name: str, source: torch.Tensor) -> torch.Tensor:
        """`source` copied into a buffer of the engine's type and memory for input `name`."""
        buffer = self._allocate(source.shape, runner.inputs[name])
        buffer.copy_(source)
        return buffer

    # ---------------------------------------------------------------- limits
    def _check_rows(self, rows: int, what: str) -> None:
        batched = [(self._prefill, "prefix_ids"), (self._decode, "input_ids")]
        for runner, name in batched if what == "prefill" else batched[1:]:
            most = runner.max_dim(name, 0)
            if rows > most:
                raise EngineLimitError(f"{runner.file} runs at most {most} rows per call (batch x beams), this request "
                                       f"needs {rows}; use a smaller batch or fewer beams (--num-beams), or re-export "
                                       f"with --max-batch {rows}")

    def _check_capacity(self, lengths: list[int], max_new_tokens: int) -> None:
        """Every layer's KV buffer (prompt + new tokens) must fit the decode profile before anything runs."""
        room = min(self._decode.max_dim(f"past.{i}.key", 2) - length for i, length in enumerate(lengths))
        if max_new_tokens > room:
            layer = min(range(len(lengths)), key=lambda i: self._decode.max_dim(f"past.{i}.key", 2) - lengths[i])
            cap = self._decode.max_dim(f"past.{layer}.key", 2)
            raise EngineLimitError(
                f"{self._decode.file} holds at most {cap} KV entries in layer {layer}, which this {lengths[layer]}-token "
                f"prompt leaves room for {max(room, 0)} new tokens, not {max_new_tokens}; ask for at most {max(room, 0)} "
                "(--max-new-tokens), or re-export with larger --max-new-tokens / --max-text-tokens")

    # ---------------------------------------------------------------- the backend protocol
    def prefill(self, inputs: PromptInputs, max_new_tokens: int) -> PrefillResult:
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        runner = self._prefill
        rows = inputs.batch_size
        self._check_rows(rows, "prefill")
        spans = span_lengths_for_ratios(self.ratios, inputs.audio_length)
        lengths = prefill_lengths(inputs.text_length, spans)
        sources = {"prefix_ids": inputs.prefix_ids, "audio_embeds": inputs.audio_embeds, "suffix_ids": inputs.suffix_ids}
        if self.needs_lora:
            if inputs.lora_scale is None:
                raise ValueError("these engines were exported with prompt-aware LoRA: pass lora_scale [B, D]")
            sources["lora_scale"] = inputs.lora_scale
        runner.check_shapes({name: tuple(t.shape) for name, t in sources.items()})
        self._check_capacity(lengths, max_new_tokens)
        self.cache = self.lora_scale = self._cache_lengths = None  # the last request's buffers go before new ones come
        with self.stream.scope(*sources.values()):
            feed = {name: self._stage(runner, name, t) for name, t in sources.items()}
            outputs = runner.run(feed, {}, self.stream, self._allocate)
            produced = [outputs[f"present.{i}.key"].shape[2] for i in range(len(lengths))]
            if produced != lengths:
                raise EngineRunError(f"{runner.file} produced KV lengths {produced}, the manifest's length rule gives "
                                     f"{lengths}: the engine was not built from this export's graphs")
            # present.{i} [B, H, T_i, d] is contiguous, a T_i slice of a buffer with room for the new tokens is not:
            # the prefill writes its own buffers and one device copy per layer fills the cache.
            cache = DeviceKVCache(lengths, rows, self.num_kv_heads, self.head_dim, max_new_tokens, dtype=self.kv_dtype,
                                  device=self.device, allocator=self.allocator)
            for i in range(len(lengths)):
                cache.write_prefill(i, outputs[f"present.{i}.key"], outputs[f"present.{i}.value"])
            self._cache_lengths = self._allocate((len(lengths),), self._decode.inputs["cache_lengths"])
            self._cache_lengths.copy_(torch.tensor(cache.lengths, dtype=self._cache_lengths.dtype))
            self.cache = cache
            self.lora_scale = feed.get("lora_scale")
            logits = outputs["logits"].float()
            kept = {int(name.split(".")[1]): t for name, t in outputs.items() if name.startswith("merge.")}
        return PrefillResult(self.stream.hand_out(logits), spans, inputs.total_length,
                             {i: self.stream.hand_out(t) for i, t in kept.items()})

    def decode(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            raise RuntimeError("decode before prefill: there is no KV cache yet")
        cache, runner = self.cache, self._decode
        cache.check_room(1)  # a write past a buffer would be a silent out-of-bounds write on the GPU
        with self.stream.scope(input_ids, position_ids):
            feed = {
                "input_ids": self._stage(runner, "input_ids", input_ids),
                "position_ids": self._stage(runner, "position_ids", position_ids),
                "cache_lengths": self._cache_lengths,
            }
            if self.lora_scale is not None:
                feed["lora_scale"] = self.lora_scale
            in_place = {}
            for i, layer in enumerate(cache.layers):
                for kind, buffer in (("key", layer.key), ("value", layer.value)):
                    feed[f"past.{i}.{kind}"] = buffer
                    in_place[f"present.{i}.{kind}"] = buffer  # same address: the step is written into the cache
            outputs = runner.run(feed, in_place, self.stream, self._allocate)
            cache.advance(1)
            self._cache_lengths.add_(1)  # queued after the engine on the same stream
            logits = outputs["logits"].float()
        return self.stream.hand_out(logits)

    def reorder(self, batch_index: torch.Tensor) -> None:
        if self.cache is None:
            raise RuntimeError("reorder before prefill: there is no KV cache yet")
        with self.stream.scope(batch_index):
            index = batch_index.to(self.device, non_blocking=True)
            self.cache.reorder(index)
            if self.lora_scale is not None:
                info = self._decode.inputs["lora_scale"]
                out = self._allocate((index.shape[0], *self.lora_scale.shape[1:]), info)
                self.lora_scale = torch.index_select(self.lora_scale, 0, index, out=out)

    def expand(self, repeats: int) -> None:
        if self.cache is None:
            raise RuntimeError("expand before prefill: there is no KV cache yet")
        self._check_rows(self.cache.batch_size * repeats, "decode")
        self.reorder(self.cache.expansion_index(repeats))
