"""The model: the image encoder base, the projection heads, the model spec and the dual encoder
(:mod:`~vlcore.model.encoder`), the frozen text encoder base and the caption-embedding cache
(:mod:`~vlcore.model.text`), the losses and the retrieval metrics."""
