"""Audio file + prompt -> text, through an export directory: the Python API a service calls.

    pipe = fastadasp.Pipeline.from_export("engines/wavllm-decay")          # backend="auto"
    result = pipe.generate("call.wav", "Transcribe the audio.", max_new_tokens=128, num_beams=1)
    result.text, result.tokens, result.stats.real_time_factor

One request runs: audio read, checked, mixed to mono and resampled (fastadasp/models/audio_input.py) -> cut
into the clips the model takes (WavLLM: 30 s chunks; Qwen2-Audio / Qwen-Audio: the first 30 s) -> features
-> audio_encoder.onnx -> the prompt rendered with the export's template and tokenized with its tokenizer ->
(WavLLM) prompt_scale.onnx for the prompt-aware LoRA scale -> prefill.onnx -> decode.onnx, greedy or beam ->
text up to the first stop token. Nothing here needs PyTorch's model or the checkpoint, except backend="torch"
(the PyTorch reference: the same request through the model's own modules, for checking an export).

`generate` takes a path, an encoded file's bytes (or a binary file object), a numpy array with sample_rate=,
an (array, sample_rate) pair, or a list of these (a batch: requests whose prompt and audio lengths match share one prefill, up to the export's --max-batch rows).
A Pipeline holds per-request state in its backend: use one per thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fastadasp.core.errors import InvalidOption, UserError
from fastadasp.core.manifest import Manifest

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEFAULT_PROMPT = "Transcribe the audio."


# --------------------------------------------------------------------------------------------- results


@dataclass
class GenerationStats:
    """What one request cost and what the merge did to it.

    Times are wall-clock milliseconds: encode (features, audio encoder, LoRA-scale graph), prefill (the decoder
    over the whole prompt, merging as it goes), decode (every step after the first token, which comes from the
    prefill). tokens_per_second: decode steps per second. real_time_factor: total time / audio duration (below
    1: faster than real time). flops_cut: the decoder prefill FLOPs this request saved against the same request
    without merging. kv_bytes / kv_bytes_full: KV cache held at the end against an unmerged cache of the same
    request (all rows: batch x beams)."""

    backend: str
    backend_reason: str
    audio_seconds: float
    audio_used_seconds: float
    chunking: str
    audio_clips: int
    audio_tokens: int
    prefix_tokens: int
    suffix_tokens: int
    audio_tokens_per_layer: list[int]
    kv_length_per_layer: list[int]
    new_tokens: int
    stopped: str  # "stop token" | "max_new_tokens"
    encode_ms: float
    prefill_ms: float
    decode_ms: float
    total_ms: float
    tokens_per_second: float
    real_time_factor: float | None
    flops_cut: float
    kv_bytes: int
    kv_bytes_full: int
    batch_rows: int  # rows that shared this request's prefill (batch x beams)


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]  # generated ids up to (not including) the stop token
    stats: GenerationStats

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "stats": asdict(self.stats)}


# --------------------------------------------------------------------------------------------- backends


@dataclass
class _Runner:
    """What one backend runs: the decoder backend (runtime/backends/base.py), the audio encoder and the
    LoRA-scale pass."""

    kind: str
    reason: str
    decoder: object
    encode_audio: object  # dict of numpy inputs [B, ...] -> numpy [B, N, D] float32
    lora_scale: object  # int64 ids [B, T] -> numpy [B, D] float32
    torch_model: object = None


def _ort_session(path: Path, providers: Sequence[str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # No spinning worker threads, as the decoder's sessions (runtime/backends/onnxruntime_backend.py): between
    # the encoder, the scale graph and the decoder, a spinning pool would hold cores the next stage needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=list(providers))


def _export_runner(directory: Path, manifest: Manifest, chosen) -> _Runner:
    """The decoder backend runtime/backends/select.py chose (TensorRT or ONNX Runtime), with the audio encoder and
    the LoRA-scale graph on ONNX Runtime (its CUDA provider when it has one)."""
    from fastadasp.runtime.backends.select import onnxruntime_providers

    roles = [role for role in ("audio_encoder", "prompt_scale") if role in manifest.graphs]
    try:
        providers = onnxruntime_providers() if roles else []
    except ImportError:
        raise InvalidOption(f"{' and '.join(manifest.graphs[r].file for r in roles)} run on ONNX Runtime, which is "
                            "not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    sessions = {role: _ort_session(directory / manifest.graphs[role].file, providers) for role in roles}

    def encode_audio(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return sessions["audio_encoder"].run(["audio_embeds"], inputs)[0].astype(np.float32)

    def lora_scale(ids: np.ndarray) -> np.ndarray:
        return sessions["prompt_scale"].run(["lora_scale"], {"prompt_ids": ids})[0].astype(np.float32)

    return _Runner(chosen.kind, chosen.reason, chosen.backend, encode_audio, lora_scale)


def _torch_runner(manifest: Manifest, model_path: str | None, reason: str, lm=None) -> _Runner:
    import torch

    from fastadasp.models.registry import build_model, get_spec
    from fastadasp.runtime.backends.torch_backend import TorchBackend

    if lm is None:
        spec = get_spec(manifest.model.name)
        if not spec.is_preset and model_path is None:
            raise InvalidOption(f"the PyTorch reference of {manifest.model.name} needs its checkpoint: pass --model-path "
                                "(model_path=) pointing at the checkpoint this export was made from")
        lm = build_model(manifest.model.name, None if spec.is_preset else model_path)
    if lm.args != manifest.model.args or (lm.decoder.lora is not None) != manifest.model.prompt_lora:
        raise InvalidOption(f"the model ({model_path or lm.name}) has another shape than this export's "
                            f"{manifest.model.name}; pass the checkpoint the export was made from")
    decoder = TorchBackend(lm.decoder, manifest.ratios, position_policy=manifest.position_policy)

    @torch.no_grad()
    def encode_audio(inputs: dict[str, np.ndarray]) -> np.ndarray:
        names = list(lm.audio_front_end().inputs)
        return lm.encode_audio(*(torch.from_numpy(inputs[n]) for n in names)).float().numpy()

    @torch.no_grad()
    def lora_scale(ids: np.ndarray) -> np.ndarray:
        return lm.prompt_lora_scale(torch.from_numpy(ids)).float().numpy()

    return _Runner("torch", reason, decoder, encode_audio, lora_scale, lm)


def open_runner(directory: Path, manifest: Manifest, backend: str, model_path: str | None = None, *,
                model=None) -> _Runner:
    """The one place a backend name becomes a runner. "auto": TensorRT when an engine for this GPU loads, else
    ONNX Runtime (CUDA when it has it) when it runs this export's precision, else the PyTorch reference; the
    reason says which and why (the order and the reasons are runtime/backends/select.py's). `model`: a SpeechLM
    already in memory for the PyTorch reference (checked against the manifest) instead of building it."""
    from fastadasp.runtime.backends.select import NoExportBackend, select_backend

    if backend not in BACKENDS:
        raise InvalidOption(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return _torch_runner(manifest, model_path, "PyTorch reference (asked for)", model)
    try:
        chosen = select_backend(directory, backend, torch_fallback=False)
    except NoExportBackend as exc:
        return _torch_runner(manifest, model_path, f"PyTorch reference ({exc})", model)
    return _export_runner(directory, manifest, chosen)


class _Timed:
    """The decoder backend with prefill / decode wall time counted. A backend that queues its work on a GPU
    stream (TensorRT) returns before the work is done: its `synchronize` ends each timed call."""

    def __init__(self, backend):
        self.backend = backend
        self.sync = getattr(backend, "synchronize", None) or (lambda: None)
        self.prefill_s = self.decode_s = 0.0
        self.decode_calls = 0

    def prefill(self, inputs, max_new_tokens):
        start = time.perf_counter()
        try:
            result = self.backend.prefill(inputs, max_new_tokens)
            self.sync()
            return result
        finally:
            self.prefill_s += time.perf_counter() - start

    def decode(self, input_ids, position_ids):
        start = time.perf_counter()
        try:
            logits = self.backend.decode(input_ids, position_ids)
            self.sync()
            return logits
        finally:
            self.decode_s += time.perf_counter() - start
            self.decode_calls += 1

    def reorder(self, batch_index):
        self.backend.reorder(batch_index)

    def expand(self, repeats):
        self.backend.expand(repeats)


# --------------------------------------------------------------------------------------------- requests


@dataclass
class _Request:
    """One row of a call, prepared up to the decoder."""

    index: int
    prefix_ids: list[int]
    suffix_ids: list[int]
    scale_ids: list[int] | None
    audio_embeds: np.ndarray  # [N, D] float32
    seconds: float
    used_seconds: float
    chunking: str
    clips: int
    encode_s: float
    lora_scale: np.ndarray | None = None  # [D]


def _is_single_audio(audio) -> bool:
    if isinstance(audio, (str, os.PathLike, np.ndarray, bytes, bytearray, memoryview)) or hasattr(audio, "read") \
            or type(audio).__name__ == "Tensor":
        return True
    return isinstance(audio, tuple) and len(audio) == 2 and not isinstance(audio[1], (str, os.PathLike, tuple, list))


class Pipeline:
    """An export directory ready to serve "audio + prompt -> text" requests."""

    def __init__(self, directory: Path, manifest: Manifest, runner: _Runner):
        self.directory, self.manifest, self.runner = directory, manifest, runner
        self.tokenizer = self.template = None
        self._sample_rate: int | None = None  # sample_rate= of the call in progress, for arrays given without one
        if manifest.text is not None:
            from fastadasp.models.prompt_template import PromptTemplate
            from fastadasp.models.tokenizer import TextTokenizer

            self.tokenizer = TextTokenizer.from_file(directory / manifest.text.tokenizer)
            self.template = PromptTemplate.load(directory / manifest.text.template)

    @classmethod
    def from_export(cls, directory: str | os.PathLike, backend: str = "auto", *, model_path: str | None = None,
                    model=None) -> "Pipeline":
        """Open an export-engine directory (manifest checked: version, file hashes). backend: "auto" | "tensorrt" |
        "onnxruntime" | "torch" (the PyTorch reference; a released model needs model_path, its checkpoint, or
        model=, the SpeechLM already loaded)."""
        directory = Path(directory)
        manifest = Manifest.load(directory)
        return cls(directory, manifest, open_runner(directory, manifest, backend, model_path, model=model))

    @property
    def backend(self) -> str:
        return self.runner.kind

    @property
    def max_audio_seconds(self) -> float:
        """The longest audio this export takes (its --audio-tokens-range MAX, after long-audio handling)."""
        from fastadasp.models.audio_input import max_seconds

        if self.manifest.audio is None:
            return 0.0
        return max_seconds(self.manifest.audio, self.manifest.audio_tokens_range.max)

    # ---------------------------------------------------------------- entry point
    def generate(self, audio=None, prompt: str | Sequence[str] = DEFAULT_PROMPT, *, sample_rate: int | None = None,
                 max_new_tokens: int | None = None, num_beams: int = 1, audio_embeds=None, on_step=None):
        """Text for one request, or a list of results for a batch (a list of audios, and one prompt or one per
        audio). Plain decoders (no audio encoder in the export) take audio_embeds [N, D] (or a list) instead.
        on_step(tokens_so_far): called after every generated token (progress display)."""
        from fastadasp.runtime.generate import GenerationConfig

        limits = self.manifest.limits
        max_new_tokens = limits.max_new_tokens if max_new_tokens is None else max_new_tokens
        GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams).validate()
        if num_beams > limits.max_batch:
            raise InvalidOption(f"--num-beams {num_beams} needs {num_beams} rows, but this export serves at most "
                                f"{limits.max_batch} (batch x beams); re-export with --max-batch {num_beams} or use fewer beams")
        if max_new_tokens > limits.max_new_tokens:
            raise InvalidOption(f"--max-new-tokens {max_new_tokens} exceeds this export's decode budget of "
                                f"{limits.max_new_tokens}; re-export with --max-new-tokens {max_new_tokens} or ask for fewer")
        items, single = self._items(audio, audio_embeds)
        self._sample_rate = sample_rate
        prompts = [prompt] * len(items) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(items):
            raise InvalidOption(f"{len(prompts)} prompts for {len(items)} audios; pass one prompt, or one per audio")
        requests = [self._prepare(i, item, p) for i, (item, p) in enumerate(zip(items, prompts))]
        results: list[GenerationResult | None] = [None] * len(requests)
        for group in self._groups(requests, num_beams):
            for request, result in zip(group, self._run(group, max_new_tokens, num_beams, on_step)):
                results[request.index] = result
        return results[0] if single else results

    # ---------------------------------------------------------------- preparation
    def _items(self, audio, audio_embeds) -> tuple[list, bool]:
        if (audio is None) == (audio_embeds is None):
            if self.manifest.audio is None:
                raise InvalidOption(f"{self.manifest.model.name} has no audio encoder in this export: pass audio "
                                    "embeddings [N, hidden_size] (--audio-embeds FILE.npy / audio_embeds=)")
            raise InvalidOption("pass the audio (--audio FILE / audio=), a path or an array with its sample rate")
        if audio_embeds is not None:
            if self.manifest.audio is not None:
                raise InvalidOption("this export has an audio encoder: pass the audio itself (--audio FILE / audio=), "
                                    "not audio embeddings")
            single = isinstance(audio_embeds, np.ndarray) or type(audio_embeds).__name__ == "Tensor"
            return ([("embeds", audio_embeds)] if single else [("embeds", e) for e in audio_embeds]), single
        if self.manifest.audio is None:
            raise InvalidOption(f"{self.manifest.model.name} has no audio encoder in this export: pass audio embeddings "
                                "[N, hidden_size] (--audio-embeds FILE.npy / audio_embeds=) instead of audio")
        if _is_single_audio(audio):
            return [("audio", audio)], True
        if isinstance(audio, (list, tuple)) and audio:
            return [("audio", a) for a in audio], False
        raise InvalidOption(f"audio must be a file path, an array with sample_rate, or a list of them; got "
                            f"{type(audio).__name__}")

    def _text_ids(self, prompt: str) -> tuple[list[int], list[int], list[int] | None]:
        if self.tokenizer is None:
            raise UserError(f"{self.directory} has no tokenizer (the checkpoint had none when it was exported); put the "
                            "model's tokenizer.json beside the checkpoint and re-run export-engine")
        if not isinstance(prompt, str):
            raise InvalidOption(f"the prompt must be text, not {type(prompt).__name__}")
        prefix_text, suffix_text, scale_text = self.template.render(prompt)
        prefix = self.tokenizer.encode(prefix_text)
        if self.template.bos:
            bos = self.tokenizer.token_id(self.template.bos)
            if bos is not None:
                prefix = [bos] + prefix
        suffix = self.tokenizer.encode(suffix_text)
        scale = None
        if self.manifest.model.prompt_lora:
            scale = self.tokenizer.encode(scale_text if scale_text is not None else prompt)
            if not scale:
                raise InvalidOption("--prompt is empty: WavLLM computes its LoRA scale from the prompt; pass an instruction")
        if not prefix and not suffix:
            raise InvalidOption("--prompt gives no tokens and the template adds none; pass a prompt")
        text_tokens = len(prefix) + len(suffix)
        if text_tokens > self.manifest.limits.max_text_tokens:
            raise InvalidOption(f"--prompt: the prompt and template come to {text_tokens} tokens but this export serves "
                                f"at most {self.manifest.limits.max_text_tokens}; shorten the prompt or re-export with "
                                f"--max-text-tokens {text_tokens}")
        return prefix, suffix, scale

    def _prepare(self, index: int, item, prompt: str) -> _Request:
        prefix, suffix, scale = self._text_ids(prompt)
        start = time.perf_counter()
        kind, value = item
        if kind == "embeds":
            embeds = self._check_embeds(value, index)
            request = _Request(index, prefix, suffix, scale, embeds, 0.0, 0.0, "audio embeddings given", 0, 0.0)
        else:
            request = self._encode(index, value, prefix, suffix, scale)
        if scale is not None:
            request.lora_scale = self.runner.lora_scale(np.asarray([scale], dtype=np.int64))[0]
        request.encode_s = time.perf_counter() - start
        self._check_length(request)
        return request

    def _check_embeds(self, value, index: int) -> np.ndarray:
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        d = self.manifest.model.args.hidden_size
        label = "--audio-embeds" if index == 0 else f"audio embeddings #{index}"
        if array.ndim != 2 or array.shape[1] != d or array.shape[0] < 1 or array.dtype.kind != "f":
            raise InvalidOption(f"{label} must be a float array [N, {d}] with N >= 1, got {array.dtype} {array.shape}")
        if not np.isfinite(array).all():
            raise InvalidOption(f"{label} has NaN or infinite values; pass finite embeddings")
        return array.astype(np.float32)

    def _encode(self, index: int, audio, prefix, suffix, scale) -> _Request:
        from fastadasp.models.audio_input import encoder_inputs, load_waveform, plan_clips

        spec = self.manifest.audio
        encoded = isinstance(audio, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(audio, "read")
        sample_rate = None if encoded else self._sample_rate
        if isinstance(audio, tuple):
            audio, sample_rate = audio
        kind = "audio array" if not encoded else "audio bytes" if isinstance(audio, (bytes, bytearray, memoryview)) \
            else "audio file object"
        source = None if isinstance(audio, (str, os.PathLike)) else kind if index == 0 else f"{kind} #{index}"
        wave = load_waveform(audio, sample_rate, spec.sample_rate, source=source, what="--audio")
        plan = plan_clips(wave, spec, self.manifest.model.family)
        self._check_tokens(plan.tokens, wave)
        pieces: list[np.ndarray] = [None] * len(plan.clips)
        by_length: dict[int, list[int]] = {}
        for i, frames in enumerate(plan.frames):
            by_length.setdefault(frames, []).append(i)
        for frames, members in by_length.items():  # equal-length clips share one encoder call
            feeds = [encoder_inputs(plan.clips[i], spec) for i in members]
            batch = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
            out = self.runner.encode_audio(batch)
            for row, i in enumerate(members):
                pieces[i] = out[row]
        embeds = np.concatenate(pieces, axis=0)
        return _Request(index, prefix, suffix, scale, embeds, plan.seconds, plan.used_seconds, plan.note,
                        len(plan.clips), 0.0)

    def _check_tokens(self, tokens: int, wave) -> None:
        from fastadasp.models.audio_input import max_seconds

        allowed = self.manifest.audio_tokens_range
        spec = self.manifest.audio
        if tokens > allowed.max:
            longest = max_seconds(spec, allowed.max)
            raise InvalidOption(f"{wave.source} is {wave.seconds:.2f} s long: this export takes at most {longest:.2f} s "
                                f"({allowed.max} audio tokens); re-export with a larger export-engine "
                                f"--audio-tokens-range MAX (now {allowed})")
        if tokens < allowed.min:
            raise InvalidOption(f"{wave.source} is {wave.seconds:.2f} s long: it makes {tokens} audio tokens but this "
                                f"export takes at least {allowed.min}; pass longer audio or re-export with a smaller "
                                f"--audio-tokens-range MIN (now {allowed})")

    def _check_length(self, request: _Request) -> None:
        n = request.audio_embeds.shape[0]
        allowed = self.manifest.audio_tokens_range
        if not allowed.min <= n <= allowed.max:
            raise InvalidOption(f"the audio comes to {n} audio tokens, outside this export's --audio-tokens-range "
                                f"{allowed}; pass audio within it or re-export with a range that covers {n}")
        prompt_tokens = len(request.prefix_ids) + n + len(request.suffix_ids)
        limit = self.manifest.model.args.max_position_embeddings
        if prompt_tokens >= limit:
            raise InvalidOption(f"the prompt and audio come to {prompt_tokens} tokens, past the model's {limit} positions; "
                                "pass shorter audio or a shorter prompt")

    def _groups(self, requests: list[_Request], num_beams: int) -> list[list[_Request]]:
        """Rows whose prefix / audio / suffix lengths match share one prefill (at most --max-batch rows)."""
        per_call = max(self.manifest.limits.max_batch // num_beams, 1)
        buckets: dict[tuple, list[_Request]] = {}
        for r in requests:
            key = (len(r.prefix_ids), r.audio_embeds.shape[0], len(r.suffix_ids))
            buckets.setdefault(key, []).append(r)
        groups = []
        for bucket in buckets.values():
            groups += [bucket[i:i + per_call] for i in range(0, len(bucket), per_call)]
        return groups

    # ---------------------------------------------------------------- decoding
    def _stop_ids(self) -> list[int]:
        if self.tokenizer is None:
            return []
        ids = [self.tokenizer.token_id(t) for t in self.template.stop]
        return [i for i in ids if i is not None]

    def _run(self, group: list[_Request], max_new_tokens: int, num_beams: int,
             on_step=None) -> list[GenerationResult]:
        import torch

        from fastadasp.core.prompt import PromptInputs
        from fastadasp.reduction.schedule import Schedule, evaluate_schedule
        from fastadasp.runtime.generate import GenerationConfig, generate

        manifest = self.manifest
        prefix = torch.tensor([r.prefix_ids for r in group], dtype=torch.long)
        suffix = torch.tensor([r.suffix_ids for r in group], dtype=torch.long)
        audio = torch.from_numpy(np.stack([r.audio_embeds for r in group]))
        scale = None
        if manifest.model.prompt_lora:
            scale = torch.from_numpy(np.stack([r.lora_scale for r in group]))
        inputs = PromptInputs(prefix, audio, suffix, scale)
        limit = manifest.model.args.max_position_embeddings
        steps = min(max_new_tokens, limit - inputs.total_length)
        stop = self._stop_ids()
        config = GenerationConfig(max_new_tokens=steps, num_beams=num_beams, eos_token_id=stop or None)
        timed = _Timed(self.runner.decoder)
        output = generate(timed, inputs, config, on_step)
        cache = self.runner.decoder.cache
        lengths = list(cache.lengths)
        kv_bytes = cache.valid_nbytes()
        per_entry = kv_bytes / max(sum(lengths), 1)
        decoded = lengths[-1] - (inputs.text_length + output.prefill.span_lengths[-2])
        kv_full = int(round(per_entry * len(lengths) * (inputs.total_length + decoded)))
        schedule = Schedule(manifest.schedule.kind, len(manifest.ratios), manifest.schedule.start_layer,
                            manifest.schedule.base_ratio, tuple(manifest.ratios))
        flops = evaluate_schedule(manifest.model.args, schedule, inputs.audio_length, inputs.text_length).flops_reduction
        results = []
        for row, request in enumerate(group):
            ids = [int(t) for t in output.sequences[row].tolist()]
            cut = next((k for k, t in enumerate(ids) if t in stop), None)
            tokens = ids if cut is None else ids[:cut]
            text = self.tokenizer.decode(tokens) if self.tokenizer is not None else ""
            encode_ms = request.encode_s * 1e3
            prefill_ms, decode_ms = timed.prefill_s * 1e3, timed.decode_s * 1e3
            total_ms = encode_ms + prefill_ms + decode_ms
            stats = GenerationStats(
                backend=self.runner.kind, backend_reason=self.runner.reason,
                audio_seconds=round(request.seconds, 4), audio_used_seconds=round(request.used_seconds, 4),
                chunking=request.chunking, audio_clips=request.clips, audio_tokens=inputs.audio_length,
                prefix_tokens=len(request.prefix_ids), suffix_tokens=len(request.suffix_ids),
                audio_tokens_per_layer=list(output.prefill.span_lengths), kv_length_per_layer=lengths,
                new_tokens=len(tokens), stopped="stop token" if cut is not None else "max_new_tokens",
                encode_ms=round(encode_ms, 3), prefill_ms=round(prefill_ms, 3), decode_ms=round(decode_ms, 3),
                total_ms=round(total_ms, 3),
                tokens_per_second=round(timed.decode_calls / timed.decode_s, 2) if timed.decode_s > 0 else 0.0,
                real_time_factor=round(total_ms / 1e3 / request.seconds, 6) if request.seconds > 0 else None,
                flops_cut=round(flops, 4), kv_bytes=kv_bytes, kv_bytes_full=kv_full,
                batch_rows=len(group) * num_beams,
            )
            results.append(GenerationResult(text, tokens, stats))
        return results
