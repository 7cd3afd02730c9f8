"""The C++ harness (plugins/weighted_merge/weightedMergeHarness.cpp) drives the plugin's creator and build-time
methods without TensorRT; here its observations are checked against the Python length rule and the supported
type list."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from fastadasp.reduction.merge import RATIO_DENOMINATOR, num_merged, ratio_numerator

MAX_TOKENS = 5000
QS = sorted({0, 1, 2, 255, 6553, 19661, 21846, 32767, 32768, 32769, 45000, 58982, 65534, 65535,
             ratio_numerator(0.3), ratio_numerator(0.37), ratio_numerator(0.5)}
            | set(random.Random(0).sample(range(65536), 12)))


@pytest.fixture(scope="module")
def harness(plugin_build):
    proc = subprocess.run([str(plugin_build.harness), str(plugin_build.library), ",".join(map(str, QS)),
                           str(MAX_TOKENS)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return records


def kept_rule(n: int, q: int) -> int:
    return n - min(n * q // RATIO_DENOMINATOR, max(n - 1, 0))


def test_creator_identity_and_fields(harness):
    (creator,) = [r["creator"] for r in harness if "creator" in r]
    assert creator == {"kind": "PLUGIN CREATOR_V3ONE", "major": 1, "name": "WeightedMerge", "version": "1",
                       "namespace": "fastadasp", "field_names": [["ratio_numerator", 5]]}  # 5 = kINT32


def test_symbolic_output_length_equals_the_length_rule_for_every_n(harness):
    symbolic = {r["q"]: r for r in harness if r.get("symbolic")}
    assert sorted(symbolic) == QS
    for q, r in symbolic.items():
        assert r["kept"] == [kept_rule(n, q) for n in range(MAX_TOKENS + 1)], f"q={q}"
        # the reduction package's rule (ratios as q / 2^16) agrees for every real span length
        assert all(r["kept"][n] == n - num_merged(n, q / RATIO_DENOMINATOR) for n in range(1, MAX_TOKENS + 1))
        assert r["outputs_agree"] and r["batch_passthrough"] and r["hidden_passthrough"]
        assert not r["size_tensor"], "output shapes must not depend on data"
        # the expression uses exactly the integer operations of the rule, no data-dependent size
        assert r["ops"] == {"prod": 1, "floor_div": 1, "min": 1, "max": 1, "sub": 2}


def test_constant_inputs_fold_to_the_rule(harness):
    constants = [r for r in harness if "constant_n" in r]
    assert len(constants) == 5 * len(QS)
    for r in constants:
        assert r["is_constant"] and r["kept"] == kept_rule(r["constant_n"], r["q"])


def test_clone_and_serialised_fields_round_trip(harness):
    clones = [r for r in harness if "clone_q" in r]
    assert sorted(r["q"] for r in clones) == QS
    for r in clones:
        assert r["clone_q"] == r["q"] and r["runtime_q"] == r["q"] and r["clone_is_distinct"]


def test_supported_formats_are_exactly_the_listed_ones(harness, supported):
    (formats,) = [r for r in harness if "formats" in r]
    listed = [[c[k] for k in (*supported["inputs"], *supported["outputs"])] for c in supported["combinations"]]
    assert sorted(formats["formats"]) == sorted(listed)
    assert not formats["non_linear_accepted"] and not formats["bad_position_accepted"]
    (types,) = [r for r in harness if "output_types" in r]
    assert types["output_types"] == [[t, 0, t, "int64"] for t in ("fp32", "fp16", "bf16")]
    assert types["nb_outputs"] == 2


def test_workspace_covers_the_kernels_scratch(harness):
    (ws,) = [r["workspace"] for r in harness if "workspace" in r]
    for batch, n, size, configured in ws:
        assert configured == 0
        # squares, dots (fp32), group starts (int32) and picked flags (uint8) per token
        assert size >= batch * n * 13
        if n > 4096:  # rows past the block-select limit also hold two key buffers for the device radix sort
            assert size >= batch * (n - 1) * 16
    sizes = {(b, n): s for b, n, s, _ in ws}
    assert sizes[(8, 3000)] > sizes[(1, 3000)] > sizes[(1, 64)]
    assert sizes[(1, 4097)] > sizes[(1, 4096)]


def test_bad_fields_fail_with_a_message_not_an_exception(harness):
    (errors,) = [r["errors"] for r in harness if "errors" in r]
    assert errors["missing"] == [False, "WeightedMerge::createPlugin: missing required field ratio_numerator"]
    assert errors["out_of_range"][0] is False and "[0, 65535]" in errors["out_of_range"][1]
    assert errors["float_field"][0] is False and "kINT32 or kINT64" in errors["float_field"][1]
    assert errors["int64_field_q"] == 32768  # kINT64 accepted, unrelated string fields ignored
