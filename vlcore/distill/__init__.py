"""Distillation, the top layer of the core: the recipe contract (distiller, context, run state,
step result) beside the loop that drives it, trajectory matching and the unrolled student, the
initialisations and start sampling, distribution matching, the health rule, and coresets (the
selector kind and its artifact)."""
