"""Backends run prefill and one-token decode; the generation loop and KV cache are shared."""
