"""One generation loop (greedy and beam search) over any backend.

A backend provides `prefill(inputs, max_new_tokens) -> PrefillResult`, `decode(input_ids [B,1],
position_ids [B,1]) -> logits [B,V]`, `reorder(batch_index)` and `expand(repeats)`. The loop never touches
the KV cache itself, so the torch reference, ONNX Runtime and TensorRT backends share it.

Beam search follows Hugging Face `generate` semantics (transformers 5.x: top 2K candidates by accumulated
log-probability, finished hypotheses scored with a length penalty, the same early-stopping heuristic) so
that ratio-0 runs are token-identical to `generate(num_beams=K)`. Unlike `generate` we prefill once per
sample and then expand the cache to K beams: rows are identical, so each beam picks the same merges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastadasp.core.errors import InvalidOption
from fastadasp.core.prompt import PromptInputs

_NEG = -1.0e9  # the "impossible" score HF uses for masked beams


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 32
    num_beams: int = 1
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    length_penalty: float = 1.0
    early_stopping: bool | str = False

    def validate(self) -> None:
        """One-line InvalidOption naming the CLI option, before any work starts."""
        if self.max_new_tokens < 1:
            raise InvalidOption(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise InvalidOption(f"--num-beams must be >= 1, got {self.num_beams}")

    def eos_list(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)


@dataclass
class GenerationOutput:
    """sequences [B, L]: generated tokens only (padded with pad/eos after a sequence ends)."""

    sequences: torch.Tensor
    prefill: object
    scores: torch.Tensor | None = None  # beam: final score of the returned hypothesis [B]


StepCallback = Callable[[int], None]  # called with the number of tokens generated so far


def generate(backend, inputs: PromptInputs, config: GenerationConfig,
             on_step: StepCallback | None = None) -> GenerationOutput:
    config.validate()
    on_step = on_step or (lambda _done: None)
    if config.num_beams == 1:
        return _greedy(backend, inputs, config, on_step)
    return _beam_search(backend, inputs, config, on_step)


def _position(inputs: PromptInputs, step: int, rows: int, device) -> torch.Tensor:
    # Generated token `step` sits right after the *full* prompt, whatever the merges did.
    return torch.full((rows, 1), inputs.total_length + step, dtype=torch.long, device=device)


def _greedy(backend, inputs: PromptInputs, config: GenerationConfig, on_step: StepCallback) -> GenerationOutput:
    result = backend.prefill(inputs, config.max_new_tokens)
    logits = result.logits
    eos = torch.tensor(config.eos_list(), dtype=torch.long, device=logits.device)
    pad = config.pad_token_id if config.pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
    unfinished = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    tokens = []
    for step in range(config.max_new_tokens):
        next_tokens = logits.argmax(dim=-1)
        if len(eos):
            next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad))
            unfinished &= ~torch.isin(next_tokens, eos)
        tokens.append(next_tokens)
        on_step(step + 1)
        if not bool(unfinished.any()) or step + 1 == config.max_new_tokens:
            break
        logits = backend.decode(next_tokens[:, None], _position(inputs, step, logits.shape[0], logits.device))
    return GenerationOutput(torch.stack(tokens, dim=1), result)


def _beam_search(backend, inputs: PromptInputs, config: GenerationConfig, on_step: StepCallback) -> GenerationOutput:
    K, max_new, lp = config.num_beams, config.max_new_tokens, config.length_penalty
    result = backend.prefill(inputs, max_new)
    B = result.logits.shape[0]
    device = result.logits.device
    backend.expand(K)
    logits = result.logits.repeat_interleave(K, dim=0)  # [B*K, V]
    eos = torch.tensor(config.eos_list(), dtype=torch.long, device=device)
    fill = config.pad_token_id if config.pad_token_id is not None else (int(eos[0]) if len(eos) else -1)
    keep = max(2, 1 + len(eos)) * K  # candidates kept per step so K live beams survive K EOS hits
    top_k_mask = torch.arange(keep, device=device) < K

    running_tokens = torch.full((B, K, max_new), fill, dtype=torch.long, device=device)
    running_scores = torch.full((B, K), _NEG, device=device)
    running_scores[:, 0] = 0.0  # only the first beam is live at the start: the others are copies
    running_origin = torch.full((B, K, max_new), -1, dtype=torch.long, device=device)
    done_tokens = running_tokens.clone()
    done_scores = torch.full((B, K), _NEG, device=device)
    done_origin = running_origin.clone()
    done_flag = torch.zeros(B, K, dtype=torch.bool, device=device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device).view(B, 1) * K

    for step in range(max_new):
        vocab = logits.shape[-1]
        log_probs = torch.log_softmax(logits.float(), dim=-1).view(B, K, vocab) + running_scores[:, :, None]
        cand_scores, cand_index = torch.topk(log_probs.view(B, K * vocab), k=keep)
        cand_beam, cand_token = cand_index // vocab, cand_index % vocab
        cand_tokens = running_tokens.gather(1, cand_beam[:, :, None].expand(B, keep, max_new)).clone()
        cand_tokens[:, :, step] = cand_token
        cand_origin = running_origin.gather(1, cand_beam[:, :, None].expand(B, keep, max_new)).clone()
        cand_origin[:, :, step] = cand_beam + batch_offset

        hits = torch.isin(cand_token, eos) if len(eos) else torch.zeros_like(cand_token, dtype=torch.bool)
        if step + 1 >= max_new:
            hits = torch.ones_like(hits)

        # Live beams for the next step: the best K candidates that did not just stop.
        live_scores = cand_scores + hits.float() * _NEG
        live = torch.topk(live_scores, k=K).indices
        running_tokens = cand_tokens.gather(1, live[:, :, None].expand(B, K, max_new))
        running_scores = live_scores.gather(1, live)
        running_origin = cand_origin.gather(1, live[:, :, None].expand(B, K, max_new))

        # Finished hypotheses: only candidates among the top K may finish; keep the best K overall.
        just_done = hits & top_k_mask[None, :]
        final = cand_scores / ((step + 1) ** lp)
        if config.early_stopping is True:
            final = final + (done_flag.all(dim=-1, keepdim=True)).float() * _NEG
        final = final + (~can_improve).float() * _NEG + (~just_done).float() * _NEG
        all_scores = torch.cat([done_scores, final], dim=1)
        best = torch.topk(all_scores, k=K).indices
        done_tokens = torch.cat([done_tokens, cand_tokens], dim=1).gather(1, best[:, :, None].expand(B, K, max_new))
        done_origin = torch.cat([done_origin, cand_origin], dim=1).gather(1, best[:, :, None].expand(B, K, max_new))
        done_scores = all_scores.gather(1, best)
        done_flag = torch.cat([done_flag, just_done], dim=1).gather(1, best)

        # Could a live beam still beat the worst finished one? (HF's default heuristic.)
        if config.early_stopping == "never" and lp > 0.0:
            hypothetical_length = max_new
        else:
            hypothetical_length = step + 1
        best_running = running_scores[:, :1] / (hypothetical_length**lp)
        worst_done = torch.where(done_flag, done_scores.min(dim=1, keepdim=True).values, torch.full_like(done_scores, _NEG))
        can_improve = can_improve & (best_running > worst_done).any(dim=-1, keepdim=True)
        on_step(step + 1)
        open_beams = not (bool(done_flag.all()) and config.early_stopping is True)
        if not (bool(can_improve.any()) and open_beams and not bool(hits.all())):
            break
        backend.reorder(running_origin[:, :, step].reshape(-1))
        logits = backend.decode(running_tokens[:, :, step].reshape(-1, 1), _position(inputs, step, B * K, device))

    generated = int((done_origin[:, 0] >= 0).sum(dim=1).max())
    return GenerationOutput(done_tokens[:, 0, :generated], result, done_scores[:, 0])
