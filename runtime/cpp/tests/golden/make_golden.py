"""Golden outputs of fastadasp.runtime.generate for the C++ generation loop (runtime/cpp/src/generate.cpp).

`HashBackend` is a backend for the Python generation loop whose logits are the hash the C++ FakeExecutor computes
(runtime/cpp/src/fake_executor.cpp): a function of the prompt ids, N, every layer's prefill KV length from the
length rule, and per decode step the fed token, its position and every layer's cache length. The same requests
run through both loops must give the same tokens, scores and number of decode steps.

Only cases whose outcome survives a small perturbation of the logits are kept: the C++ loop computes
log-softmax in float32 like torch, but not with the same summation order, so a near-tie between candidates could
otherwise go either way.

    python runtime/cpp/tests/golden/make_golden.py     # rewrites generate_cases.json beside this file

tests/runtime/cpp/test_cpp_runtime.py checks that the committed file still matches a fresh run, and the C++
test (runtime/cpp/tests/test_generate.cpp) replays every case through the C++ loop.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch

from fastadasp.core.prompt import PromptInputs
from fastadasp.reduction.schedule import span_lengths_for_ratios
from fastadasp.runtime.backends.base import PrefillResult
from fastadasp.runtime.generate import GenerationConfig, generate

OUTPUT = Path(__file__).with_name("generate_cases.json")
MASK = (1 << 64) - 1
DENOMINATOR = 65536
HIDDEN = 4  # audio_embeds' D: the fake ignores the values


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def fold(h: int, value: int) -> int:
    return splitmix64(h ^ (value & MASK))


def logit(state: int, token: int) -> float:
    """Exact multiples of 2^-20 in [-8, 8): float32 holds them exactly (FakeExecutor::logit)."""
    return (splitmix64(state ^ splitmix64(token & MASK)) >> 40) / 1048576.0 - 8.0


class HashBackend:
    """The backend protocol of runtime/backends/base.py over hashed states, one per row."""

    def __init__(self, vocab: int, seed: int, numerators: list[int], noise: float = 0.0):
        self.vocab, self.seed, self.numerators, self.noise = vocab, seed, numerators, noise
        self.states: list[int] = []
        self.lengths: list[int] = []
        self.capacities: list[int] = []
        self.decode_calls = 0

    def _logits(self) -> torch.Tensor:
        rows = []
        for state in self.states:
            row = [logit(state, v) for v in range(self.vocab)]
            if self.noise:
                row = [x + self.noise * (logit(state ^ 0x5555, v) / 8.0) for x, v in zip(row, range(self.vocab))]
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float64).float()

    def prefill(self, inputs: PromptInputs, max_new_tokens: int) -> PrefillResult:
        p, n, s = inputs.prefix_ids.shape[1], inputs.audio_length, inputs.suffix_ids.shape[1]
        spans = span_lengths_for_ratios([q / DENOMINATOR for q in self.numerators], n)
        self.lengths = [p + spans[i] + s for i in range(len(self.numerators))]
        self.capacities = [t + max_new_tokens for t in self.lengths]
        self.states = []
        for b in range(inputs.batch_size):
            h = splitmix64(splitmix64(self.seed) ^ splitmix64(b + 1))
            for token in inputs.prefix_ids[b].tolist():
                h = fold(h, token)
            h = fold(h, n)
            for token in inputs.suffix_ids[b].tolist():
                h = fold(h, token)
            for length in self.lengths:
                h = fold(h, length)
            self.states.append(fold(h, spans[-1]))
        return PrefillResult(self._logits(), spans, inputs.total_length)

    def decode(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        assert all(length < cap for length, cap in zip(self.lengths, self.capacities)), "write past a capacity"
        next_states = []
        for state, token, position in zip(self.states, input_ids[:, 0].tolist(), position_ids[:, 0].tolist()):
            h = fold(splitmix64(state ^ splitmix64(token & MASK)), position)
            for length in self.lengths:
                h = fold(h, length)
            next_states.append(h)
        self.states = next_states
        self.lengths = [length + 1 for length in self.lengths]
        self.decode_calls += 1
        return self._logits()

    def reorder(self, batch_index: torch.Tensor) -> None:
        self.states = [self.states[i] for i in batch_index.tolist()]

    def expand(self, repeats: int) -> None:
        self.states = [s for s in self.states for _ in range(repeats)]


_EARLY = {0: False, 1: True, 2: "never"}


def run_case(case: dict, noise: float = 0.0) -> dict:
    backend = HashBackend(case["vocab"], case["seed"], case["ratio_numerators"], noise)
    batch = case["batch"]
    inputs = PromptInputs(
        torch.tensor(case["prefix_ids"], dtype=torch.long).reshape(batch, len(case["prefix_ids"][0])),
        torch.zeros(batch, case["audio_tokens"], HIDDEN),
        torch.tensor(case["suffix_ids"], dtype=torch.long).reshape(batch, len(case["suffix_ids"][0])),
    )
    config = GenerationConfig(
        max_new_tokens=case["max_new_tokens"], num_beams=case["num_beams"], eos_token_id=case["eos_token_ids"] or None,
        pad_token_id=case["pad_token_id"], length_penalty=case["length_penalty"],
        early_stopping=_EARLY[case["early_stopping"]],
    )
    out = generate(backend, inputs, config)
    scores = None if out.scores is None else [float(x) for x in out.scores.tolist()]
    return {"tokens": out.sequences.tolist(), "scores": scores, "decode_steps": backend.decode_calls}


def _robust(case: dict, expected: dict) -> bool:
    for noise in (2e-4, -2e-4):
        if run_case(case, noise)["tokens"] != expected["tokens"]:
            return False
    return True


def make_cases(count: int = 36, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    cases: list[dict] = []
    attempt = 0
    while len(cases) < count:
        attempt += 1
        beams = 1 if len(cases) % 3 == 0 else rng.choice([2, 3, 4, 5])
        batch = rng.choice([1, 1, 2, 3]) if beams * 3 <= 12 else 1
        eos_count = rng.choice([0, 1, 1, 2])
        keep = max(2, 1 + eos_count) * beams
        vocab = rng.randint(max(8, 2 * keep), max(2 * keep, 24))  # V >= 2 x candidates: never a masked beam among them
        layers = rng.randint(1, 6)
        numerators = [rng.choice([0, 0, 9831, 19661, 32768, 52429, 65535]) for _ in range(layers)]
        p, s = rng.randint(0, 4), rng.randint(0, 3)
        case = {
            "name": f"case{len(cases):02d}-{'greedy' if beams == 1 else f'beam{beams}'}-b{batch}",
            "vocab": vocab,
            "seed": rng.randrange(1 << 32),
            "ratio_numerators": numerators,
            "ratio_denominator": DENOMINATOR,
            "batch": batch,
            "prefix_ids": [[rng.randrange(vocab) for _ in range(p)] for _ in range(batch)],
            "audio_tokens": rng.randint(1, 300),
            "suffix_ids": [[rng.randrange(vocab) for _ in range(s)] for _ in range(batch)],
            "max_new_tokens": rng.randint(1, 16),
            "num_beams": beams,
            "eos_token_ids": rng.sample(range(vocab), eos_count),
            "pad_token_id": rng.choice([None, None, vocab - 1]),
            "length_penalty": rng.choice([1.0, 1.0, 0.5, 2.0, 0.0]),
            "early_stopping": rng.choice([0, 0, 1, 2]),
        }
        expected = run_case(case)
        if not _robust(case, expected):
            continue
        case["expected"] = expected
        cases.append(case)
        if attempt > 20 * count:
            raise RuntimeError("too few robust cases; change the seed")
    return cases


def golden() -> dict:
    return {
        "generator": "runtime/cpp/tests/golden/make_golden.py",
        "logits": "FakeExecutor hash (runtime/cpp/src/fake_executor.cpp); generate() of fastadasp.runtime.generate",
        "hidden_size": HIDDEN,
        "cases": make_cases(),
    }


def dumps(data: dict) -> str:
    """One case per line: small diffs when the Python loop changes."""
    head = {k: v for k, v in data.items() if k != "cases"}
    lines = [json.dumps(case) for case in data["cases"]]
    return json.dumps(head, indent=1)[:-2] + ',\n "cases": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


if __name__ == "__main__":
    OUTPUT.write_text(dumps(golden()))
    print(OUTPUT, file=sys.stderr)
