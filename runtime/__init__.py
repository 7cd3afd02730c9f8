"""Runtime: the compacted KV cache and one generation loop (greedy / beam) over any backend."""
