"""TensorRTBackend on a TensorRT-shaped fake (tests/runtime/fake_tensorrt_runtime.py) whose engines run the exported
graphs with ONNX Runtime on host memory, bound by address.

- Same tokens as the PyTorch reference (greedy and beam 5; tiny-llama and tiny-wavllm with its LoRA scale;
  ratio 0 and a reduced schedule; a batch of 2), with logits within 1e-4 at every step.
- Decode writes the cache in place: the buffers keep their addresses and every step binds present to past.
- Engine selection: the entry for this GPU and toolkit; a mismatch lists what the directory holds and a
  working export-engine command; plugin libraries are registered before the engines deserialise.
- Requests outside the engine profiles fail in one line before anything runs, and the fake's contract checks
  (shapes set, every tensor bound, buffers large enough) do fail when broken.
- select_backend("auto") falls back with its reason.

Real TensorRT execution is not covered here: no machine in CI can run an engine.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from fastadasp.core.errors import UserError
from fastadasp.core.manifest import AudioTokenRange, Manifest, ManifestError, ServingLimits
from fastadasp.runtime.backends import select as select_module
from fastadasp.runtime.backends.tensorrt_backend import EngineLimitError, EngineRunError, TensorRTBackend
from fastadasp.runtime.backends.tensorrt_selection import (
    EngineLoadError,
    EngineSelectionError,
    Toolkit,
    choose_engine_entry,
)
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate
from fastadasp.runtime.kv_cache import CacheCapacityError

import fake_tensorrt_runtime as fake_tensorrt  # tests/runtime/fake_tensorrt_runtime.py




FAKE_VERSION = fake_tensorrt.FAKE_VERSION

# Small limits keep the fake engines' profiles (and the tests that step past them) small.
LIMITS = ServingLimits(max_batch=5, max_text_tokens=16, max_new_tokens=8)
AUDIO = AudioTokenRange(1, 24, 48)
# name -> (preset, schedule kind, start layer, ratio)
EXPORTS = {
    "llama-full": ("tiny-llama", "constant", 0, 0.0),
    "llama-reduced": ("tiny-llama", "decay", 1, 0.5),
    "wavllm-full": ("tiny-wavllm", "constant", 0, 0.0),
    "wavllm-reduced": ("tiny-wavllm", "constant", 1, 0.3),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, preset_cache):
    """name -> (model, export directory holding graphs + fake engines for SM 8.6); built once per module.
    Read-only: tests that change a directory copy it first."""
    from fastadasp.exporter.export import ExportConfig, export_model
    from fastadasp.models.registry import build_model
    from fastadasp.reduction.schedule import make_schedule

    built = {}

    def get(name):
        if name not in built:
            preset, kind, start, ratio = EXPORTS[name]
            if preset not in preset_cache:
                preset_cache[preset] = build_model(preset, seed=0)
            lm = preset_cache[preset]
            out = tmp_path_factory.mktemp(name)
            export_model(lm, make_schedule(kind, lm.args.num_layers, start, ratio), out,
                         ExportConfig(audio_tokens=AUDIO, include_audio_encoder=False, limits=LIMITS),
                         progress=lambda _: None)
            fake_tensorrt.write_fake_engines(out, target="8.6")
            built[name] = (lm, out)
        return built[name]

    return get


@pytest.fixture
def fake():
    return fake_tensorrt.make_fake_tensorrt()


def open_backend(directory, fake, **kwargs) -> TensorRTBackend:
    options = dict(trt=fake, flavor="tensorrt-rtx", device="cpu", compute_capability="8.6",
                   allocator=fake.device_memory)
    return TensorRTBackend.from_export(directory, **{**options, **kwargs})


def copy_export(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(directory, target)
    return target


class Recorder:
    """A backend that records every logits tensor the generation loop receives."""

    def __init__(self, backend):
        self.backend, self.logits = backend, []

    def prefill(self, inputs, max_new_tokens):
        result = self.backend.prefill(inputs, max_new_tokens)
        self.logits.append(result.logits.clone())
        return result

    def decode(self, input_ids, position_ids):
        logits = self.backend.decode(input_ids, position_ids)
        self.logits.append(logits.clone())
        return logits

    def reorder(self, batch_index):
        self.backend.reorder(batch_index)

    def expand(self, repeats):
        self.backend.expand(repeats)


def reference(lm, directory) -> TorchBackend:
    manifest = Manifest.load(directory, verify_hashes=False)
    return TorchBackend(lm.decoder, manifest.ratios, position_policy=manifest.position_policy)


# --------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("num_beams", [1, 5])
@pytest.mark.parametrize("name", list(EXPORTS))
def test_tokens_match_the_torch_backend(exports, fake, name, num_beams):
    lm, directory = exports(name)
    inputs = lm.synthetic_prompt(seed=1)
    config = GenerationConfig(max_new_tokens=6, num_beams=num_beams)
    ours, ref = Recorder(open_backend(directory, fake)), Recorder(reference(lm, directory))
    out, expected = generate(ours, inputs, config), generate(ref, inputs, config)
    assert out.sequences.tolist() == expected.sequences.tolist()
    assert out.prefill.span_lengths == expected.prefill.span_lengths
    assert ours.backend.cache.lengths == ref.backend.cache.lengths
    assert len(ours.logits) == len(ref.logits)
    for got, want in zip(ours.logits, ref.logits):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if "reduced" in name:
        assert len(set(ours.backend.cache.lengths)) > 1  # the schedule did shorten some layers' KV


def test_a_batch_of_two_matches_the_torch_backend(exports, fake):
    lm, directory = exports("wavllm-reduced")
    inputs = lm.synthetic_prompt(batch_size=2, seed=4)
    config = GenerationConfig(max_new_tokens=5)
    out = generate(open_backend(directory, fake), inputs, config)
    assert out.sequences.tolist() == generate(reference(lm, directory), inputs, config).sequences.tolist()


def test_decode_writes_the_cache_in_place(exports, fake):
    lm, directory = exports("llama-reduced")
    backend, ref = open_backend(directory, fake), reference(lm, directory)
    inputs = lm.synthetic_prompt(seed=2)
    result, _ = backend.prefill(inputs, 4), ref.prefill(inputs, 4)
    addresses = [(layer.key.data_ptr(), layer.value.data_ptr()) for layer in backend.cache.layers]
    token = result.logits.argmax(-1, keepdim=True)
    for step in range(4):
        position = torch.full((1, 1), inputs.total_length + step)
        logits = backend.decode(token, position)
        ref.decode(token, position)
        token = logits.argmax(-1, keepdim=True)
    assert [(layer.key.data_ptr(), layer.value.data_ptr()) for layer in backend.cache.layers] == addresses
    calls = backend.contexts["decode"].fake_calls
    assert len(calls) == 4
    for call in calls:
        for i, (key, value) in enumerate(addresses):
            assert call[f"past.{i}.key"] == call[f"present.{i}.key"] == key
            assert call[f"past.{i}.value"] == call[f"present.{i}.value"] == value
    # What the engine wrote through those addresses is the reference's cache, step for step.
    assert backend.cache.lengths == ref.cache.lengths
    for i in range(backend.cache.num_layers):
        for got, want in zip(backend.cache.view(i), ref.cache.view(i)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(CacheCapacityError):  # the 4-token budget is spent; refused before the engine runs
        backend.decode(token, torch.full((1, 1), inputs.total_length + 4))
    assert len(calls) == 4


# --------------------------------------------------------------------------------------------- limits


def test_rows_beyond_the_engine_profile_fail_before_decode(exports, fake):
    lm, directory = exports("llama-reduced")
    backend = open_backend(directory, fake)
    inputs = lm.synthetic_prompt(batch_size=2, seed=0)
    with pytest.raises(EngineLimitError, match=r"at most 5 rows .* needs 10.*--max-batch 10") as info:
        generate(backend, inputs, GenerationConfig(max_new_tokens=3, num_beams=5))
    assert "\n" not in str(info.value)
    assert backend.contexts["decode"].fake_calls == []


def test_kv_capacity_beyond_the_decode_profile_fails_before_prefill(exports, fake):
    lm, directory = exports("llama-reduced")
    backend = open_backend(directory, fake)
    with pytest.raises(EngineLimitError, match=r"room for \d+ new tokens, not 100.*--max-new-tokens") as info:
        backend.prefill(lm.synthetic_prompt(seed=0), max_new_tokens=100)
    assert "\n" not in str(info.value)
    assert backend.contexts["prefill"].fake_calls == []


def test_audio_beyond_the_prefill_profile_fails_before_prefill(exports, fake):
    lm, directory = exports("llama-reduced")
    backend = open_backend(directory, fake)
    with pytest.raises(EngineLimitError, match=r"audio_embeds with dimension 1 in 1\.\.48, this request has 60.*"
                                               r"--audio-tokens-range"):
        backend.prefill(lm.synthetic_prompt(seed=0, audio_tokens=60), max_new_tokens=2)
    assert backend.contexts["prefill"].fake_calls == []


# --------------------------------------------------------------------------------------------- choosing engines


def _toolkit(flavor="tensorrt-rtx", version=FAKE_VERSION) -> Toolkit:
    return Toolkit.of(fake_tensorrt.make_fake_tensorrt(version), flavor)


@pytest.fixture(scope="module")
def many_entries(exports, tmp_path_factory) -> Path:
    """llama-reduced with TensorRT-RTX engines for 8.6 and its portable set, and TensorRT ones from an H100."""
    _, directory = exports("llama-reduced")
    target = tmp_path_factory.mktemp("entries") / "export"
    shutil.copytree(directory, target)
    fake_tensorrt.write_fake_engines(target, target="portable")
    fake_tensorrt.write_fake_engines(target, flavor="tensorrt", version="10.13.0",
                                     target="NVIDIA H100 80GB HBM3 sm9.0")
    return target


@pytest.mark.parametrize("toolkit, cc, key", [
    (("tensorrt-rtx", FAKE_VERSION), "8.6", f"tensorrt-rtx-{FAKE_VERSION}/8.6"),  # built for it beats portable
    (("tensorrt-rtx", FAKE_VERSION), "8.9", f"tensorrt-rtx-{FAKE_VERSION}/portable"),
    (("tensorrt-rtx", FAKE_VERSION), "12.0", f"tensorrt-rtx-{FAKE_VERSION}/portable"),
    (("tensorrt", "10.13.0"), "9.0", "tensorrt-10.13.0/NVIDIA H100 80GB HBM3 sm9.0"),
])
def test_the_entry_for_this_gpu_and_toolkit_is_chosen(many_entries, toolkit, cc, key):
    manifest = Manifest.load(many_entries)
    chosen, entry, _ = choose_engine_entry(manifest, many_entries, [_toolkit(*toolkit)], cc)
    assert chosen == key and manifest.engines[key] == entry


def _export_command(message: str) -> list[str]:
    command = shlex.split(message.split("`")[1])
    assert command[0].startswith("FASTADASP_TENSORRT_FLAVOR=") and command[1] == "export-engine"
    return command[2:]


@pytest.mark.parametrize("toolkit, cc, why", [
    (("tensorrt-rtx", FAKE_VERSION), "7.5", "lacks 7.5"),  # Turing needs an engine built for it
    (("tensorrt-rtx", "1.8.0"), "8.6", f"tensorrt-rtx {FAKE_VERSION}; tensorrt-rtx 1.8.0 is installed"),
    (("tensorrt", "10.13.0"), "8.9", "built for 9.0"),
])
def test_a_mismatch_lists_what_the_directory_holds(many_entries, toolkit, cc, why, tmp_path):
    manifest = Manifest.load(many_entries)
    with pytest.raises(EngineSelectionError) as info:
        choose_engine_entry(manifest, many_entries, [_toolkit(*toolkit)], cc)
    message = str(info.value)
    assert "\n" not in message and f"compute capability {cc}" in message and why in message
    for key in manifest.engines:
        assert key in message
    # The command it prints re-exports this schedule with engines for this GPU: parse and run it (graphs only;
    # the command function itself, so the CLI's process-wide settings such as --quiet stay untouched).
    from fastadasp.cli.commands import cmd_export
    from fastadasp.cli.parsers import build_export_parser

    argv = _export_command(message)
    assert argv[argv.index("--out") + 1] == str(many_entries)
    if toolkit[0] == "tensorrt-rtx":
        assert argv[argv.index("--compute-capability") + 1] == cc
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert cmd_export(build_export_parser().parse_args([*argv, "--skip-engines"])) == 0
    again = Manifest.load(tmp_path / "again")
    assert again.schedule.ratio_numerators == manifest.schedule.ratio_numerators
    assert again.limits == manifest.limits and again.audio_tokens_range == manifest.audio_tokens_range


def test_a_gpu_tensorrt_rtx_cannot_target_asks_for_tensorrt(many_entries):
    with pytest.raises(EngineSelectionError, match=r"cannot build for compute capability 9\.0; install TensorRT") as info:
        choose_engine_entry(Manifest.load(many_entries), many_entries, [_toolkit()], "9.0")
    assert "FASTADASP_TENSORRT_FLAVOR=tensorrt export-engine" in str(info.value)


def test_an_export_without_engines_says_so(exports, fake, tmp_path):
    _, directory = exports("llama-full")
    bare = copy_export(directory, tmp_path)
    dataclasses.replace(Manifest.load(bare), engines={}).save(bare)
    with pytest.raises(EngineSelectionError, match="holds no engines, only ONNX graphs") as info:
        open_backend(bare, fake)
    assert "export-engine --model tiny-llama" in str(info.value)
    assert isinstance(info.value, UserError)


def test_engine_files_are_verified_before_they_load(exports, fake, tmp_path):
    _, directory = exports("llama-full")
    broken = copy_export(directory, tmp_path)
    (broken / "decode.86.engine").write_bytes(b"half an engine")
    with pytest.raises(ManifestError, match="decode.86.engine does not match the hash"):
        open_backend(broken, fake)


# --------------------------------------------------------------------------------------------- plugins


@pytest.fixture
def plugin_export(exports, tmp_path):
    lm, directory = exports("llama-full")
    library = tmp_path / "libweighted_merge_plugin.so"
    library.write_bytes(b"stands in for the plugin library")
    target = copy_export(directory, tmp_path)
    fake_tensorrt.write_fake_engines(target, target="8.6", plugin_libraries=[library])
    return target, library, lm


def test_plugin_libraries_are_registered_before_the_engines_deserialise(plugin_export, fake, monkeypatch):
    import fastadasp.plugins

    directory, library, lm = plugin_export
    with pytest.raises(EngineLoadError, match="plugin creator not found"):
        # The fake's engines need the library: deserialising without registering it fails, as in TensorRT.
        monkeypatch.setattr(fastadasp.plugins, "load_into_registry", lambda trt, path: None)
        open_backend(directory, fake)
    registered = []

    def register(trt, path):  # the real loader also checks the ELF file, which this stand-in is not
        registered.append(Path(path))
        return trt.get_plugin_registry().load_library(path)

    monkeypatch.setattr(fastadasp.plugins, "load_into_registry", register)
    backend = open_backend(directory, fake)
    assert registered == [library.resolve()]
    assert backend.prefill(lm.synthetic_prompt(seed=0), 1).logits.shape[0] == 1


def test_the_real_plugin_loader_refuses_a_file_that_is_no_plugin(plugin_export, fake):
    directory, _, _ = plugin_export
    with pytest.raises(UserError, match="not a loadable plugin library"):
        open_backend(directory, fake)


def test_a_changed_plugin_library_is_refused(plugin_export, fake):
    directory, library, _ = plugin_export
    library.write_bytes(b"another build")
    with pytest.raises(EngineLoadError, match="differs from the one the engines .* were built with"):
        open_backend(directory, fake)


# --------------------------------------------------------------------------------------------- the fake's contract


class Log:
    def __init__(self, fake):
        messages = self.messages = []

        class Collecting(fake.ILogger):
            def log(self, severity, msg):
                messages.append(msg)

        self.logger = Collecting()


def _decode_call(fake, directory, log):
    """A decode engine's context with every input shape set (each input's profile minimum) and every tensor
    bound to a buffer from the fake's device memory; returns (context, buffers)."""
    engine = fake.Runtime(log.logger).deserialize_cuda_engine((directory / "decode.86.engine").read_bytes())
    context = engine.create_execution_context()
    dtypes = {"FLOAT": torch.float32, "INT64": torch.int64}
    buffers = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == fake.TensorIOMode.INPUT:
            assert context.set_input_shape(name, engine.get_tensor_profile_shape(name, 0)[0])
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        buffer = fake.device_memory.empty(context.get_tensor_shape(name), dtypes[engine.get_tensor_dtype(name).name], "cpu")
        buffers[name] = buffer.zero_()
        assert context.set_tensor_address(name, buffer.data_ptr())
    return context, buffers


def test_the_fake_runs_a_correctly_bound_call(exports, fake):
    context, buffers = _decode_call(fake, exports("llama-full")[1], Log(fake))
    assert context.execute_async_v3(0) is True
    assert buffers["logits"].abs().sum() > 0  # written through the bound address


def test_the_fake_refuses_a_missing_binding(exports, fake):
    log = Log(fake)
    context, _ = _decode_call(fake, exports("llama-full")[1], log)
    context.set_tensor_address("cache_lengths", 0)
    assert context.execute_async_v3(0) is False
    assert "no address set for tensor(s) cache_lengths" in log.messages[-1]


def test_the_fake_refuses_a_shape_outside_the_profile(exports, fake):
    log = Log(fake)
    context, _ = _decode_call(fake, exports("llama-full")[1], log)
    assert context.set_input_shape("input_ids", (6, 1)) is False  # max batch is 5
    assert "outside optimization profile 0" in log.messages[-1]


def test_the_fake_refuses_an_unset_input_shape(exports, fake):
    log = Log(fake)
    engine = fake.Runtime(log.logger).deserialize_cuda_engine((exports("llama-full")[1] / "decode.86.engine").read_bytes())
    assert engine.create_execution_context().execute_async_v3(0) is False
    assert "input shapes not specified" in log.messages[-1]


def test_the_fake_refuses_a_buffer_too_small_or_not_device_memory(exports, fake):
    log = Log(fake)
    context, buffers = _decode_call(fake, exports("llama-full")[1], log)
    small = fake.device_memory.empty((buffers["logits"].numel() - 1,), torch.float32, "cpu")
    context.set_tensor_address("logits", small.data_ptr())
    assert context.execute_async_v3(0) is False
    assert "logits" in log.messages[-1] and "bytes left" in log.messages[-1]
    foreign = torch.zeros_like(buffers["logits"])  # host memory the fake's allocator never handed out
    context.set_tensor_address("logits", foreign.data_ptr())
    assert context.execute_async_v3(0) is False
    assert "not in any live device buffer" in log.messages[-1]


def test_a_refused_call_fails_the_backend_with_tensorrts_message(exports, fake, monkeypatch):
    lm, directory = exports("llama-full")
    backend = open_backend(directory, fake)
    inputs = lm.synthetic_prompt(seed=0)
    result = backend.prefill(inputs, 2)
    context = backend.contexts["decode"]
    bind = context.set_tensor_address
    monkeypatch.setattr(context, "set_tensor_address",
                        lambda name, address: True if name == "cache_lengths" else bind(name, address))
    with pytest.raises(EngineRunError, match="execute_async_v3 failed: .*cache_lengths"):
        backend.decode(result.logits.argmax(-1, keepdim=True), torch.full((1, 1), inputs.total_length))


# --------------------------------------------------------------------------------------------- backend="auto"


def test_auto_uses_tensorrt_when_an_engine_for_this_gpu_loads(exports, fake, monkeypatch):
    _, directory = exports("llama-full")
    opened = TensorRTBackend.from_export.__func__
    monkeypatch.setattr(TensorRTBackend, "from_export", classmethod(
        lambda cls, d, flavor=None: opened(cls, d, trt=fake, flavor="tensorrt-rtx", device="cpu",
                                           compute_capability="8.6", allocator=fake.device_memory)))
    chosen = select_module.select_backend(directory)
    assert chosen.kind == "tensorrt" and isinstance(chosen.backend, TensorRTBackend)
    assert chosen.reason.startswith("using TensorRT (tensorrt-rtx 1.7.0.fake engines")


def test_auto_falls_back_to_onnxruntime_and_says_why(exports, monkeypatch):
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    _, directory = exports("llama-full")
    monkeypatch.setattr(select_module, "onnxruntime_providers", lambda: ["CPUExecutionProvider"])
    chosen = select_module.select_backend(directory)
    # Whatever this machine lacks (TensorRT, a GPU, an engine for it) is named on the same line.
    assert chosen.kind == "onnxruntime" and isinstance(chosen.backend, OnnxRuntimeBackend)
    assert chosen.reason.startswith("TensorRT: ") and chosen.reason.endswith("; using ONNX Runtime CPU")
    assert "\n" not in chosen.reason
    if not torch.cuda.is_available():
        assert chosen.reason.startswith("TensorRT: no CUDA GPU") or "cannot load" in chosen.reason


def test_auto_asks_onnxruntime_for_cuda_when_it_has_it(exports, monkeypatch):
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    _, directory = exports("llama-full")
    seen = {}
    monkeypatch.setattr(select_module, "onnxruntime_providers",
                        lambda: [select_module.CUDA_PROVIDER, "CPUExecutionProvider"])
    monkeypatch.setattr(OnnxRuntimeBackend, "from_export", classmethod(lambda cls, d, **kw: seen.update(kw) or "ort"))
    chosen = select_module.select_backend(directory, "onnxruntime")
    assert chosen == ("ort", "onnxruntime", "using ONNX Runtime CUDA")
    assert seen["providers"][0] == select_module.CUDA_PROVIDER


def test_auto_falls_back_to_torch_without_onnxruntime(exports, monkeypatch):
    lm, directory = exports("wavllm-reduced")

    def missing():
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(select_module, "onnxruntime_providers", missing)
    chosen = select_module.select_backend(directory, model=lm)
    assert chosen.kind == "torch" and isinstance(chosen.backend, TorchBackend)
    assert "ONNX Runtime: ImportError: No module named 'onnxruntime'" in chosen.reason
    assert chosen.reason.endswith("using the PyTorch reference")
    inputs = lm.synthetic_prompt(seed=1)
    config = GenerationConfig(max_new_tokens=3)
    assert generate(chosen.backend, inputs, config).sequences.tolist() == \
        generate(reference(lm, directory), inputs, config).sequences.tolist()


def test_without_torch_fallback_auto_reports_why_nothing_else_runs(exports, monkeypatch):
    _, directory = exports("llama-full")

    def missing():
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(select_module, "onnxruntime_providers", missing)
    with pytest.raises(select_module.NoExportBackend, match=r"^TensorRT: .*; ONNX Runtime: ImportError: No module"):
        select_module.select_backend(directory, torch_fallback=False)


def test_naming_tensorrt_reports_its_error_and_auto_stops_at_a_broken_export(exports, tmp_path, monkeypatch):
    _, directory = exports("llama-full")
    monkeypatch.setattr(TensorRTBackend, "from_export", classmethod(
        lambda cls, d, flavor=None: (_ for _ in ()).throw(EngineSelectionError("the full line", "short"))))
    with pytest.raises(EngineSelectionError, match="the full line"):
        select_module.select_backend(directory, "tensorrt")
    assert select_module.select_backend(directory).reason.startswith("TensorRT: short; ")
    broken = copy_export(directory, tmp_path)
    (broken / "decode.onnx").write_bytes(b"truncated")
    with pytest.raises(ManifestError, match="does not match the hash"):
        select_module.select_backend(broken)
    with pytest.raises(UserError, match="--backend 'tensorrt-llm': choose one of auto, tensorrt, onnxruntime, torch"):
        select_module.select_backend(directory, "tensorrt-llm")
