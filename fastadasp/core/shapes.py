"""Decoder dimensions (gpt-fast's ModelArgs): the one dataclass the planner, adapters, exporter and
runtime share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderArgs:
    """Dimensions of a LLaMA/Qwen2-style decoder."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int = 4096

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def validate(self) -> None:
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (rotary embedding halves)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")

    @classmethod
    def from_hf_config(cls, cfg) -> "DecoderArgs":
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_hidden_layers,
            num_heads=cfg.num_attention_heads,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            head_dim=head_dim,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=getattr(cfg, "max_position_embeddings", 4096),
        )
