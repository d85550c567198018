"""Language-model plumbing below the data assimilation (:mod:`da_embed.lm.kv_cache`)."""

__all__: list[str] = []
