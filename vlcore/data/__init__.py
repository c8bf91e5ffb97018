"""Data: the dataset base and its splits, pair data (the data path from a dataset to caption
embeddings and images, and the models built for it), pair sets (distilled sets and coresets alike)
and their formats, and the figures of a set."""

# the formats register their pair-set readers (PairSet.load reads an exported folder through them)
from vlcore.data import export  # noqa: E402,F401
