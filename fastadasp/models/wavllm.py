"""Adapter for WavLLM: LLaMA-2 decoder, Whisper + WavLM audio front-end, prompt-aware LoRA.

WavLLM's LoRA on q/k/v/o is scaled per request: s [B, D] comes from a LoRA-free pass of the base LLM over
the instruction prompt (last layer, before the final norm) -> fc2(gelu(fc1(h))) -> softmax pooling over
the prompt -> relu -> clamp(max=3). The scale cannot be folded into fixed weights, so the decoder takes
`lora_scale` as an input (and so will the exported prefill/decode graphs); `prompt_lora_scale` is the pass
that produces it, reusing the decoder's own weights with the LoRA off.

Released checkpoints are fairseq; fastadasp/models/wavllm_checkpoint.py maps their keys onto this layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastadasp.core.manifest import AudioTokenBranch
from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.audio_front_end import (
    FRAMES,
    SAMPLES,
    AudioFrontEnd,
    AudioInput,
    conv_stage,
    no_front_end,
    whisper_audio_spec,
    whisper_encoder_forward,
    whisper_encoder_stages,
    whisper_frames,
)
from fastadasp.models.decoder import PromptLoRA, SpeechDecoder, hidden_states
from fastadasp.models.llama import LLAMA2_7B
from fastadasp.models.speech_lm import SpeechLM

# WavLLM's decoder is LLaMA-2-7B unchanged.
WAVLLM_7B = LLAMA2_7B
# Longest scale the prompt network may emit (WavLLM clamps it).
MAX_LORA_SCALE = 3.0


class PromptScaleNet(nn.Module):
    """h [B, T, D] (prompt hidden states) -> s [B, D].

    o = fc2(gelu(fc1(h))); w = softmax over prompt positions of pool(o) (one weight per position);
    s = clamp(relu(sum_t w_t o_t), max=3). Names: fc1/fc2/pool = the release's scale_fc_1, scale_fc_2,
    scale_weight_attention.
    """

    def __init__(self, hidden_size: int, inner_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, inner_size)
        self.fc2 = nn.Linear(inner_size, hidden_size)
        self.pool = nn.Linear(hidden_size, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        o = self.fc2(F.gelu(self.fc1(h)))  # [B, T, D]
        logits = self.pool(o).float()  # [B, T, 1]
        if mask is not None:
            logits = logits.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(torch.float32).min)
        pooled = (torch.softmax(logits, dim=1) * o.float()).sum(dim=1)
        return pooled.relu().clamp(max=MAX_LORA_SCALE).to(h.dtype)


class GLUSubsampler(nn.Module):
    """Stride-2 Conv1d + GLU per layer (two layers: 50 Hz -> 12.5 Hz). x [B, T, in] -> [B, ~T/4, out]"""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int, kernel_sizes=(3, 3)):
        super().__init__()
        last = len(kernel_sizes) - 1
        self.conv_layers = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else mid_dim // 2, mid_dim if i < last else 2 * out_dim, k, stride=2, padding=k // 2)
            for i, k in enumerate(kernel_sizes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        for conv in self.conv_layers:
            y = F.glu(conv(y), dim=1)
        return y.transpose(1, 2)


class BottleneckAdapter(nn.Module):
    """x + LayerNorm(up(gelu(down(x))))"""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down_layer = nn.Linear(dim, bottleneck)
        self.up_layer = nn.Linear(bottleneck, dim)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.up_layer(F.gelu(self.down_layer(x)))) + x


class EncoderBranch(nn.Module):
    """One encoder's path to 12.5 Hz: subsample -> adapter -> projector (the release: 1024 -> 2048)."""

    def __init__(self, in_dim: int, mid_dim: int, adapter_dim: int, out_dim: int):
        super().__init__()
        self.subsample = GLUSubsampler(in_dim, mid_dim, adapter_dim)
        self.adapter = BottleneckAdapter(adapter_dim, adapter_dim // 2)
        self.projector = nn.Linear(adapter_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.adapter(self.subsample(x)))


class WavLLMAudioFrontEnd(nn.Module):
    """The released WavLLM front-end's module tree (microsoft/SpeechT5 WavLLM, read for structure):
    Whisper encoder on the mel -> branch; WavLM on the waveform, its hidden states (embeddings + every layer)
    mixed by softmax(layer_weights) -> branch; the two streams concatenated and projected to the LLM width.
    Release sizes: Whisper-large-v2 1280 -> subsample(1280, 1280, 1024); WavLM-base 768 -> subsample(768,
    512, 1024); adapters 1024/512; projectors 1024 -> 2048; projection 4096 -> 4096."""

    def __init__(self, whisper_encoder: nn.Module, wavlm: nn.Module, adapter_dim: int, branch_dim: int,
                 hidden_size: int, wavlm_mid_dim: int | None = None):
        super().__init__()
        self.whisper = whisper_encoder
        self.wavlm = wavlm
        d_whisper, d_wavlm = whisper_encoder.config.d_model, wavlm.config.hidden_size
        self.whisper_branch = EncoderBranch(d_whisper, d_whisper, adapter_dim, branch_dim)
        self.wavlm_branch = EncoderBranch(d_wavlm, wavlm_mid_dim or d_wavlm, adapter_dim, branch_dim)
        self.wavlm_layer_weights = nn.Parameter(torch.ones(wavlm.config.num_hidden_layers + 1))
        self.projection = nn.Linear(2 * branch_dim, hidden_size)

    def forward(self, mel: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        """mel [B, mel_bins, F], waveform [B, F * 160] (16 kHz), F up to Whisper's window -> [B, N, D]"""
        a = self.whisper_branch(whisper_encoder_forward(self.whisper, mel))
        layers = self.wavlm(waveform, output_hidden_states=True).hidden_states  # L + 1 x [B, T, C]
        weights = torch.softmax(self.wavlm_layer_weights, dim=0)
        mixed = sum(w * h for w, h in zip(weights, layers))
        b = self.wavlm_branch(mixed)
        # The two encoders' frame counts differ by one at clip edges: keep the shorter. Slicing each stream to the
        # other's length says so without a Python min(), which a trace would freeze at the example's length.
        a, b = a[:, : b.shape[1]], b[:, : a.shape[1]]
        # Stream order whisper-then-WavLM is our reading of the release (not checked against its weights).
        return self.projection(torch.cat([a, b], dim=-1))

    def token_branches(self) -> list[AudioTokenBranch]:
        """How many tokens each stream makes from a clip: Whisper from mel frames, WavLM from samples."""
        whisper = whisper_encoder_stages(self.whisper) + [conv_stage(c) for c in self.whisper_branch.subsample.conv_layers]
        wavlm = [conv_stage(layer.conv) for layer in self.wavlm.feature_extractor.conv_layers]
        wavlm += [conv_stage(c) for c in self.wavlm_branch.subsample.conv_layers]
        return [AudioTokenBranch(FRAMES, whisper), AudioTokenBranch(SAMPLES, wavlm)]


# Released key prefix -> our module path (wavllm_checkpoint.py's "audio" group keeps the released names).
FRONT_END_KEY_MAP = (
    ("audio_encoder.model.", "whisper."),
    ("audio_encoder.", "whisper_branch."),
    ("wavlm_encoder.model.", "wavlm."),
    ("wavlm_encoder.output_weights", "wavlm_layer_weights"),
    ("wavlm_encoder.", "wavlm_branch."),
    ("wavlm_audio_proj.", "projection."),
)


def front_end_state_dict(audio_group: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released front-end keys -> WavLLMAudioFrontEnd keys (audio_proj, built but unused by the release, is dropped)."""
    out = {}
    for key, tensor in audio_group.items():
        if key.startswith("audio_proj."):
            continue
        for released, ours in FRONT_END_KEY_MAP:
            if key.startswith(released):
                out[ours + key[len(released):]] = tensor
                break
        else:
            raise ValueError(f"unexpected WavLLM front-end key {key!r}")
    return out


def released_front_end_state_dict(front_end: WavLLMAudioFrontEnd) -> dict[str, torch.Tensor]:
    """The inverse of front_end_state_dict (to write checkpoints in the released layout, and for tests)."""
    out = {}
    for key, tensor in front_end.state_dict().items():
        for released, ours in FRONT_END_KEY_MAP:
            if key.startswith(ours):
                out[released + key[len(ours):]] = tensor
                break
    return out


class _NamedMelWaveInputs(nn.Module):
    """front_end(mel, waveform) with its inputs named input_features, waveform (the exported graph's names)."""

    def __init__(self, front_end: WavLLMAudioFrontEnd):
        super().__init__()
        self.front_end = front_end

    def forward(self, input_features: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        return self.front_end(input_features, waveform)


# WavLM's gated relative position bias splits a tensor in two; the torch.export-based exporter writes that as
# opset-18 Split, and the onnx version converter has no adapter taking it down to 17 (it also fails on ReduceSum
# axes given as a computed input). Below opset 18 the front-end is exported with the TorchScript exporter.
_DYNAMO_MIN_OPSET = 18
# Waveforms are drawn at speech-like amplitude for synthetic requests.
_SYNTHETIC_WAVEFORM_STD = 0.1


class WavLLMLM(SpeechLM):
    family = "wavllm"
    needs_lora_scale = True

    def __init__(self, hf_llama, lora: PromptLoRA, scale_net: PromptScaleNet, front_end: WavLLMAudioFrontEnd | None, name="wavllm"):
        super().__init__(name=name, decoder=SpeechDecoder(hf_llama.model, hf_llama.lm_head, lora=lora), hf_model=hf_llama)
        self.scale_net = scale_net
        self.front_end = front_end

    @torch.no_grad()
    def prompt_lora_scale(self, prompt_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The per-request LoRA scale s [B, D] from the instruction prompt ids [B, T] (LoRA off)."""
        h = hidden_states(self.decoder, self.decoder.embed(prompt_ids))
        return self.scale_net(h, mask)

    @property
    def has_audio_front_end(self) -> bool:
        return self.front_end is not None

    @torch.no_grad()
    def encode_audio(self, mel: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        if self.front_end is None:
            raise no_front_end(self, "it was loaded without its Whisper/WavLM front-end")
        return self.front_end(mel, waveform)

    def audio_front_end(self) -> AudioFrontEnd:
        if self.front_end is None:
            raise no_front_end(self, "it was loaded without its Whisper/WavLM front-end")
        w = self.front_end.whisper.config
        inputs = {
            "input_features": AudioInput((w.num_mel_bins, FRAMES)),
            "waveform": AudioInput((SAMPLES,), synthetic_std=_SYNTHETIC_WAVEFORM_STD),
        }
        # Long audio: consecutive 30 s clips, each encoded on its own (WavLLM's process_audio_source).
        spec = whisper_audio_spec(w.num_mel_bins, whisper_frames(w), self.front_end.token_branches(), waveform=True,
                                  long_audio="chunk")
        return AudioFrontEnd(_NamedMelWaveInputs(self.front_end), inputs, spec, dynamo_min_opset=_DYNAMO_MIN_OPSET)

    def prompt_template(self):
        from fastadasp.models.prompt_template import wavllm_template

        return wavllm_template()


def _lora_dims(args: DecoderArgs) -> tuple[dict[str, int], dict[str, int]]:
    q_out, kv_out = args.num_heads * args.head_dim, args.kv_dim
    outs = {"q": q_out, "k": kv_out, "v": kv_out, "o": args.hidden_size}
    ins = {"q": args.hidden_size, "k": args.hidden_size, "v": args.hidden_size, "o": q_out}
    return outs, ins


def assemble(groups: dict[str, dict[str, torch.Tensor]], llama_config, lora_rank: int, scale_inner: int,
             front_end: WavLLMAudioFrontEnd | None, name: str) -> WavLLMLM:
    """Build the adapter from converted weight groups (see wavllm_checkpoint.convert_wavllm_state_dict)."""
    from transformers import LlamaForCausalLM

    from fastadasp.models.checkpoint import permute_rotary

    llama = LlamaForCausalLM(llama_config).eval()
    llama.load_state_dict(groups["decoder"], strict=True)
    args = DecoderArgs.from_hf_config(llama_config)
    outs, ins = _lora_dims(args)
    scale_index = {
        "q": permute_rotary(torch.arange(outs["q"]), args.num_heads, dim=-1),
        "k": permute_rotary(torch.arange(outs["k"]), args.num_kv_heads, dim=-1),
    }
    lora = PromptLoRA(args.num_layers, args.hidden_size, outs, ins, lora_rank, scale_index)
    with torch.no_grad():
        for key, tensor in groups["lora"].items():  # "layers.{i}.{p}.lora_a" / ".lora_b"
            _, i, p, which = key.split(".")
            getattr(lora, which)[f"{i}_{p}"].copy_(tensor)
    scale_net = PromptScaleNet(args.hidden_size, scale_inner)
    scale_net.load_state_dict(groups["prompt_scale"], strict=True)
    return WavLLMLM(llama, lora.eval(), scale_net.eval(), front_end, name=name)


def tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=288, hidden_size=64, intermediate_size=144, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=4096, tie_word_embeddings=False,
    )


def tiny_front_end(hidden_size: int) -> WavLLMAudioFrontEnd:
    from transformers import WavLMConfig, WavLMModel, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    whisper = WhisperEncoder(WhisperConfig(
        num_mel_bins=16, d_model=40, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        max_source_positions=100,
    ))
    wavlm = WavLMModel(WavLMConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32, max_bucket_distance=100,
    ))
    front_end = WavLLMAudioFrontEnd(whisper.eval(), wavlm.eval(), adapter_dim=32, branch_dim=48,
                                    hidden_size=hidden_size, wavlm_mid_dim=16)
    return front_end.eval()


TINY_LORA_RANK = 4
TINY_SCALE_INNER = 32


def build_tiny(seed: int = 0) -> WavLLMLM:
    """A tiny WavLLM whose weights come from a synthetic checkpoint with the released key names, through
    the same converter a real checkpoint goes through."""
    from fastadasp.models.synthetic import wavllm_synthetic_state_dict
    from fastadasp.models.wavllm_checkpoint import convert_wavllm_state_dict

    cfg = tiny_llama_config()
    args = DecoderArgs.from_hf_config(cfg)
    torch.manual_seed(seed)
    synthetic = wavllm_synthetic_state_dict(args, TINY_LORA_RANK, seed=seed, scale_inner=TINY_SCALE_INNER)
    groups = convert_wavllm_state_dict(synthetic, args, TINY_LORA_RANK)
    torch.manual_seed(seed)
    return assemble(groups, cfg, TINY_LORA_RANK, TINY_SCALE_INNER, tiny_front_end(cfg.hidden_size), "tiny-wavllm")


def load(path: str) -> WavLLMLM:
    """Load a released WavLLM fairseq checkpoint (a local .pt file) through the key converter."""
    from transformers import LlamaConfig

    from fastadasp.models.wavllm_checkpoint import convert_wavllm_state_dict, infer_wavllm_shape

    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("model", state)
    args, lora_rank = infer_wavllm_shape(state)
    groups = convert_wavllm_state_dict(state, args, lora_rank)
    cfg = LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads, head_dim=args.head_dim,
        num_key_value_heads=args.num_kv_heads, max_position_embeddings=8192, tie_word_embeddings=False,
        rms_norm_eps=1e-6,  # the release's LLaMA never overrides Meta's default norm_eps
    )
    inner = groups["prompt_scale"]["fc1.weight"].shape[0]
    front_end = released_front_end(groups["audio"], args.hidden_size) if groups["audio"] else None
    lm = assemble(groups, cfg, lora_rank, inner, front_end, "wavllm")
    lm.checkpoint_path = str(path)
    return lm


def released_front_end(audio_group: dict[str, torch.Tensor], hidden_size: int) -> WavLLMAudioFrontEnd:
    """Whisper-large-v2 + WavLM-base front-end at the release's sizes, loaded strictly from the checkpoint."""
    from transformers import WavLMConfig, WavLMModel, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    whisper = WhisperEncoder(WhisperConfig(
        num_mel_bins=80, d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
        max_source_positions=1500,
    ))
    wavlm = WavLMModel(WavLMConfig())  # transformers' defaults are the base size (768, 12 layers)
    front_end = WavLLMAudioFrontEnd(whisper, wavlm, adapter_dim=1024, branch_dim=2048, hidden_size=hidden_size,
                                    wavlm_mid_dim=512)
    front_end.load_state_dict(front_end_state_dict(audio_group), strict=True)
    return front_end.eval()
