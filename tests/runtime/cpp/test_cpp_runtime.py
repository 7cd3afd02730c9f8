"""The C++ runtime (runtime/cpp/): its ctest suite, the TensorRT executor compile check, the golden generation
cases shared with the Python loop, and `fastadasp-run --dry-run` against the Python length rule on exports of
every tiny preset.

The build (CMake, once per session) and the preset exports run concurrently; see conftest.py."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from cpp_support import PRESET_EXPORTS, SOURCE

from fastadasp.core.files import sha256_file
from fastadasp.core.manifest import EngineEntry, EngineFile, Manifest, ManifestError
from fastadasp.reduction.schedule import span_lengths_for_ratios

GOLDEN = SOURCE / "tests" / "golden" / "generate_cases.json"
KV_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------- ctest


def test_ctest_passes(cpp_build):
    proc = subprocess.run(["ctest", "--test-dir", str(cpp_build.directory), "-j2", "--output-on-failure"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    total = int(re.search(r"tests passed, 0 tests failed out of (\d+)", proc.stdout).group(1))
    if not cpp_build.has_gtest:
        pytest.skip(f"GoogleTest is not installed (Debian/Ubuntu: apt-get install libgtest-dev): only the {total} "
                    "fastadasp-run checks ran, not the C++ unit tests")
    assert total >= 35, proc.stdout[-3000:]


def test_tensorrt_executor_compiles(cpp_build):
    """The TensorRT executor and its beam-reorder kernel compile against TensorRT 10 headers and the CUDA toolkit
    (linked only where libnvinfer exists), so an API mistake fails here rather than on a GPU machine."""
    if cpp_build.tensorrt_mode == "none":
        pytest.skip(f"the TensorRT executor was not compiled: {cpp_build.headers_note}; or no nvcc / CUDA toolkit")
    objects = list(cpp_build.directory.glob("CMakeFiles/*/src/tensorrt/trt_executor.cpp.o"))
    kernels = list(cpp_build.directory.glob("CMakeFiles/*/src/tensorrt/kv_reorder.cu.o"))
    assert objects and kernels, "the TensorRT executor objects are missing from the build"


def test_golden_generation_cases_match_the_python_loop():
    """runtime/cpp/tests/golden/generate_cases.json (which the C++ test replays) is what fastadasp.runtime.generate
    produces today on the shared hashed logits."""
    spec = importlib.util.spec_from_file_location("make_golden", SOURCE / "tests" / "golden" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.golden()
    committed = json.loads(GOLDEN.read_text())
    hint = "the Python generation loop changed: re-run python runtime/cpp/tests/golden/make_golden.py and ctest"
    assert [c["name"] for c in committed["cases"]] == [c["name"] for c in fresh["cases"]], hint
    for old, new in zip(committed["cases"], fresh["cases"]):
        assert {k: v for k, v in old.items() if k != "expected"} == {k: v for k, v in new.items() if k != "expected"}, hint
        assert old["expected"]["tokens"] == new["expected"]["tokens"], f"{old['name']}: {hint}"
        assert old["expected"]["decode_steps"] == new["expected"]["decode_steps"], f"{old['name']}: {hint}"
        if new["expected"]["scores"] is None:
            assert old["expected"]["scores"] is None, hint
        else:
            assert old["expected"]["scores"] == pytest.approx(new["expected"]["scores"], abs=1e-6), hint


def test_example_export_is_a_manifest_python_reads():
    """runtime/cpp/tests/data/export/manifest.json (the ctest fixture) follows the published schema and loads."""
    import jsonschema

    from fastadasp.core.manifest import manifest_schema

    data = json.loads((SOURCE / "tests" / "data" / "export" / "manifest.json").read_text())
    jsonschema.Draft202012Validator(manifest_schema()).validate(data)
    assert Manifest.from_dict(data).model.name == "tiny-llama"


# --------------------------------------------------------------------------------------------- dry run vs Python


def _requests(manifest: Manifest, count: int = 45, seed: int = 0):
    """(batch, beams, P, N, S, T) covering the audio range: edges, powers of two around merge boundaries, random."""
    rng = random.Random(seed)
    lo, hi = manifest.audio_tokens_range.min, manifest.audio_tokens_range.max
    ns = {lo, hi, manifest.audio_tokens_range.opt, 1, 2, 3, 5, 7}
    ns |= {v + d for v in (16, 32, 64, 128, 256, 512, 1024) for d in (-1, 0, 1)}
    ns |= {rng.randint(lo, hi) for _ in range(count - len(ns))}
    limits, positions = manifest.limits, manifest.model.args.max_position_embeddings
    out = []
    for n in sorted(v for v in ns if lo <= v <= hi):
        p, s = (n * 7) % 11, 1 + n % 5
        t = 1 + n % min(limits.max_new_tokens, 40)
        batch, beams = 1 + n % 2, 1 + (n // 2) % 2
        if p + n + s + t <= positions:
            out.append((batch, beams, p, n, s, t))
    return out


@pytest.mark.parametrize("preset", list(PRESET_EXPORTS))
def test_dry_run_capacities_follow_the_python_length_rule(preset, preset_exports, cpp_build):
    export = preset_exports[preset]
    manifest = Manifest.load(export)
    args = manifest.model.args
    element = KV_BYTES[manifest.graphs["decode"].inputs["past.0.key"].dtype]
    requests = _requests(manifest)
    assert len(requests) >= 30
    for batch, beams, p, n, s, t in requests:
        report = _json(cpp_build.dry_run(export, "--audio-tokens", n, "--text-tokens", f"{p}:{s}",
                                         "--max-new-tokens", t, "--batch", batch, "--num-beams", beams))
        spans = span_lengths_for_ratios(manifest.ratios, n)
        prefill = [p + spans[i] + s for i in range(args.num_layers)]
        capacities = [length + t for length in prefill]
        where = f"{preset} N={n} P={p} S={s} T={t}"
        assert report["audio_tokens_per_layer"] == spans, where
        assert report["prefill_kv_lengths"] == prefill, where
        assert report["capacities"] == capacities, where
        rows = batch * beams
        per_layer = [2 * rows * args.num_kv_heads * c * args.head_dim * element for c in capacities]
        assert [layer["kv_bytes"] for layer in report["layers"]] == per_layer, where
        assert report["kv_bytes_total"] == sum(per_layer), where
        assert report["reorder_bytes"] == (sum(per_layer) if beams > 1 else 0), where
        assert report["first_decode_position"] == p + n + s, where
    summary = report["manifest"]
    assert summary["model"]["name"] == preset
    assert summary["model"]["num_layers"] == args.num_layers
    assert summary["model"]["prompt_lora"] == manifest.model.prompt_lora
    assert summary["schedule"]["ratio_numerators"] == manifest.schedule.ratio_numerators
    assert summary["limits"] == {"max_batch": manifest.limits.max_batch,
                                 "max_text_tokens": manifest.limits.max_text_tokens,
                                 "max_new_tokens": manifest.limits.max_new_tokens}
    assert report["engine"]["chosen"] is None and "holds no engines" in report["engine"]["reason"]


@pytest.mark.parametrize("preset", ["tiny-wavllm", "tiny-qwen-audio"])
def test_dry_run_at_the_limits_equals_the_engine_profile(preset, preset_exports, cpp_build):
    """At the longest request the limits allow, each layer's capacity is the decode engine profile's maximum
    (engines/profile.py), so every request inside the limits fits the engines."""
    from fastadasp.engines.profile import decode_profile

    export = preset_exports[preset]
    manifest = Manifest.load(export)
    limits = manifest.limits
    p, s = limits.max_text_tokens // 2, limits.max_text_tokens - limits.max_text_tokens // 2
    report = _json(cpp_build.dry_run(export, "--audio-tokens", manifest.audio_tokens_range.max,
                                     "--text-tokens", f"{p}:{s}", "--max-new-tokens", limits.max_new_tokens))
    profile = decode_profile(manifest, limits.max_batch, limits.max_text_tokens, limits.max_new_tokens)
    expected = [profile.inputs[f"past.{i}.key"][2][2] for i in range(manifest.model.args.num_layers)]
    assert report["capacities"] == expected


def test_dry_run_refuses_requests_outside_the_limits(preset_exports, cpp_build):
    export = preset_exports["tiny-llama"]  # 2048 positions, audio 1:1500:3000, 5 rows, 256 new tokens
    cases = {
        ("--audio-tokens", 3001): "outside this export's range 1:1500:3000",
        ("--audio-tokens", 100, "--num-beams", 3, "--batch", 2): "6 rows, but this export serves at most 5",
        ("--audio-tokens", 100, "--max-new-tokens", 257): "decode budget of 256",
        ("--audio-tokens", 2000, "--max-new-tokens", 64): "passes the model's 2048 positions",
        ("--audio-tokens", 100, "--text-tokens", "8"): "--text-tokens must be P:S",
    }
    for args, message in cases.items():
        proc = cpp_build.dry_run(export, *args, check=False)
        assert proc.returncode == 2, (args, proc.stdout[-500:])
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)


def test_dry_run_refuses_another_manifest_version(tmp_path, preset_exports, cpp_build):
    data = json.loads((preset_exports["tiny-llama"] / "manifest.json").read_text())
    data["version"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    proc = cpp_build.dry_run(tmp_path, "--audio-tokens", 10, check=False)
    assert proc.returncode == 2
    assert "has manifest version 1 (it is read by fastadasp 0.1.x)" in proc.stderr
    assert "reads version 2 (fastadasp 0.2.x)" in proc.stderr
    with pytest.raises(ManifestError, match="fastadasp 0.1.x"):  # the Python reader refuses it the same way
        Manifest.load(tmp_path, verify_hashes=False)


def _with_engine_entries(export: Path, out: Path) -> Manifest:
    """A copy of the export's manifest with three engine entries (placeholder engine files that hash)."""
    from fastadasp.engines.profile import profiles_for_manifest

    manifest = Manifest.load(export)
    limits = manifest.limits
    profiles = profiles_for_manifest(manifest, limits.max_batch, limits.max_text_tokens, limits.max_new_tokens)
    for flavor, version, target in [("tensorrt", "10.14.1.48", "NVIDIA H100 80GB HBM3 sm9.0"),
                                    ("tensorrt", "10.13.0.35", "8.9"), ("tensorrt-rtx", "1.7.1.116", "8.9")]:
        files = {}
        for role, profile in profiles.items():
            name = f"{role}.{flavor}.{re.sub('[^A-Za-z0-9]+', '', target)}.engine"
            (out / name).write_bytes(f"{flavor} {version} {target} {role}".encode())
            files[role] = EngineFile(name, sha256_file(out / name), (out / name).stat().st_size, "key", None,
                                     profile.to_json())
        manifest = manifest.with_engines(f"{flavor}-{version}/{target}",
                                         EngineEntry(flavor, version, target, manifest.dtype, [], files))
    manifest.save(out)  # validated against manifest.schema.json by tests/conftest.py
    return manifest


def test_dry_run_chooses_the_engine_entry_or_says_how_to_build_it(tmp_path, preset_exports, cpp_build):
    from fastadasp.cli.parsers import build_export_parser

    _with_engine_entries(preset_exports["tiny-llama"], tmp_path)
    request = ("--audio-tokens", 1200, "--text-tokens", "6:4", "--max-new-tokens", 32)
    chosen = _json(cpp_build.dry_run(tmp_path, *request, "--compute-capability", "sm90", "--tensorrt-version", "10.14.1"))
    assert chosen["engine"]["chosen"] == "tensorrt-10.14.1.48/NVIDIA H100 80GB HBM3 sm9.0"
    assert chosen["engine"]["checked"] is True
    assert chosen["engine"]["profile_check"] == "ok"  # the profiles engines/profile.py builds fit the request
    below = _json(cpp_build.dry_run(tmp_path, "--audio-tokens", 1200, "--text-tokens", "0:4",
                                    "--compute-capability", "9.0", "--tensorrt-version", "10.14.1"))
    assert "accepts prefix_ids from [1, 1]" in below["engine"]["profile_check"]

    none = _json(cpp_build.dry_run(tmp_path, *request, "--compute-capability", "8.6", "--tensorrt-version", "10.14.1"))
    engine = none["engine"]
    assert engine["chosen"] is None
    why = {e["key"]: e["why"] for e in engine["entries"]}
    assert why["tensorrt-10.14.1.48/NVIDIA H100 80GB HBM3 sm9.0"] == "built for compute capability 9.0, this GPU is 8.6"
    assert why["tensorrt-10.13.0.35/8.9"] == "built with TensorRT 10.13.0.35, this runtime has TensorRT 10.14.1"
    assert why["tensorrt-rtx-1.7.1.116/8.9"].startswith("a TensorRT-RTX engine")
    assert f"no engine in {tmp_path} for TensorRT 10.14.1 on compute capability 8.6" in engine["reason"]
    for key in why:
        assert key in engine["reason"]
    command = shlex.split(engine["build_command"])
    assert command[0] == "export-engine" and engine["build_command"] in engine["reason"]
    args = build_export_parser().parse_args(command[1:])  # a command export-engine accepts as it is
    assert (args.model, args.schedule, args.ratio, args.start_layer) == ("tiny-llama", "decay", 0.3, 2)
    assert (args.compute_capability, args.out, args.max_batch) == ("8.6", str(tmp_path), 5)

    if cpp_build.tensorrt_mode != "linked":
        proc = cpp_build.fastadasp_run("--export-dir", tmp_path, "--audio-tokens", 100, check=False)
        assert proc.returncode == 2 and "built without TensorRT" in proc.stderr


def test_run_says_why_it_cannot_run_here(preset_exports, cpp_build):
    proc = cpp_build.fastadasp_run("--export-dir", preset_exports["tiny-qwen2-audio"], "--audio-tokens", 50, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    if cpp_build.tensorrt_mode == "linked":
        assert "no CUDA device" in proc.stderr or "holds no engines" in proc.stderr, proc.stderr
    else:
        assert "built without TensorRT" in proc.stderr and "--dry-run" in proc.stderr


def test_fake_executor_runs_the_whole_request_path(preset_exports, cpp_build):
    """prefill -> beam expansion -> decode steps through the C API, with lora_scale (WavLLM), no GPU."""
    proc = cpp_build.fastadasp_run("--export-dir", preset_exports["tiny-wavllm"], "--audio-tokens", 300,
                                   "--text-tokens", "5:3", "--max-new-tokens", 6, "--batch", 2, "--num-beams", 2,
                                   "--executor", "fake")
    out = _json(proc)
    assert out["executor"] == "fake"
    assert len(out["tokens"]) == 2 and all(len(row) == len(out["tokens"][0]) for row in out["tokens"])
    assert len(out["scores"]) == 2 and out["decode_steps"] >= 1
