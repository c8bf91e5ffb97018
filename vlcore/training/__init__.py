"""Training fresh models: SGD training on pair data, the evaluator kind, the expert buffers
(Stage 1: experts trained on real pairs and their trajectories), shortcut buffers, and
torch.distributed under torchrun."""
