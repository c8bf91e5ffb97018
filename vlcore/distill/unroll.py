"""The unrolled student and the bi-trajectory loss: the math of trajectory matching, in one place.

A student starts from an expert's trainable parameters at epoch ``s`` and takes ``steps``
differentiable SGD steps, each on its own minibatch of the synthetic set (step size ``lr["img"]``
for image-side parameters, ``lr["txt"]`` for text-side ones).  Its final parameters are compared
with the expert's at epoch ``s + M`` (:func:`trajectory_loss`); the gradient of that loss reaches
the synthetic set and the step sizes.

The student's parameters are one flat vector (:class:`vlcore.model.params.ParamLayout` lays the named
tensors out in it, image side first), so a step is one update ``theta - lr * grad`` whatever the model.  An
:class:`Unroll` describes one trajectory to differentiate; an *unroll backend* (a component) says
how: ``prepare(model)`` runs the model with substituted parameters, ``run(unroll, wrt)`` returns
the loss and its gradients.  The base class keeps the whole graph (the reference); the bundled
``checkpoint`` and ``tesla`` backends (``vlcore.plugins.unroll_backends``) trade it for memory.
What a trajectory-matching student reads (synthetic images or features, texts, step sizes and a
method's own inputs) is one :class:`StudentInputs` value.
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from vlcore.core.component import Component
from vlcore.model.encoder import DualEncoder
from vlcore.model.losses import contrastive_loss
from vlcore.model.params import ParamLayout

ForwardFn = Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]]


def trajectory_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                    layout: ParamLayout) -> tuple[torch.Tensor, dict[str, float]]:
    """Bi-trajectory matching loss of flat parameter vectors: for each modality,
    ||student - target||^2 / ||start - target||^2, summed over the modalities.

    Each modality is normalised by its own expert displacement.  Returns the loss and the
    per-modality terms (as floats, for logging).
    """
    total = None
    parts: dict[str, float] = {}
    for m, b in layout.blocks.items():
        num = ((student[b] - target[b]) ** 2).sum()
        den = ((start[b] - target[b]) ** 2).sum()
        term = num / den.clamp_min(1e-12)
        parts[m] = float(term.detach())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no parameters to match")
    return total, parts


@dataclass
class Unroll:
    """One student trajectory: ``steps`` SGD steps from ``start`` with step sizes ``lr``.

    ``step_loss(params, k)`` is the student's loss at step ``k`` with parameters ``params`` (a
    dict of named tensors): it reads the synthetic set (and anything else it closes over) and must
    be deterministic in ``k`` (a backend may call it again for the same step; random draws, e.g.
    dropout, are replayed from the RNG state the backend saves).
    """

    layout: ParamLayout
    start: torch.Tensor            # flat, detached
    target: torch.Tensor           # flat, detached
    lr: dict[str, torch.Tensor]    # modality -> step size (may require grad)
    steps: int
    step_loss: Callable[[dict[str, torch.Tensor], int], torch.Tensor]
    #: the matching loss of the final parameters, ``match(student, start, target, layout) -> (loss,
    #: per-modality floats)``: :func:`trajectory_loss` unless a method matches otherwise
    match: Callable[..., tuple[torch.Tensor, dict[str, float]]] = trajectory_loss

    def update(self, theta: torch.Tensor, k: int, *, create_graph: bool) -> torch.Tensor:
        """theta_{k+1} = theta_k - lr * grad of step k's loss at theta_k (``theta`` requires grad)."""
        loss = self.step_loss(self.layout.unflatten(theta), k)
        (g,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
        lr = self.layout.lr_vector(self.lr)
        return theta - (lr if create_graph else lr.detach()) * g

    def loss(self, theta: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.match(theta, self.start, self.target, self.layout)


@dataclass(frozen=True, eq=False)
class StudentInputs(Mapping):
    """What the student reads in one outer iteration, made once from the learned tensors
    (:meth:`vlcore.distill.matching.TrajectoryMatching.student_inputs`): the unroll differentiates each of
    its tensors once, and the gradient reaches the learned tensors through what made them.  Also a
    read-only mapping of those tensors by name (``x``, ``text``, ``lr_img``, ``lr_txt``, then
    ``extra``'s: ``inputs["similarity"] is inputs.extra["similarity"]``)."""

    #: the synthetic images, or (frozen backbone) the features of those some inner step uses
    x: torch.Tensor
    #: the synthetic text embeddings
    text: torch.Tensor
    #: the student's step sizes of the image and the text side (from the learned log step sizes)
    lr_img: torch.Tensor
    lr_txt: torch.Tensor
    #: each synthetic pair's row of ``x`` (-1: no step uses it); None: pair i is row i
    rows: torch.Tensor | None = None
    #: a method's own inputs by name: its other learned tensors, or what it makes of them (LoRS:
    #: ``similarity``, which replaces its factors)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every input tensor by name, ``extra``'s last (the unroll differentiates them in this order)."""
        return {"x": self.x, "text": self.text, "lr_img": self.lr_img, "lr_txt": self.lr_txt, **self.extra}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors()[name]

    def __iter__(self):
        return iter(self.tensors())

    def __len__(self) -> int:
        return len(self.tensors())


@dataclass
class UnrollResult:
    loss: float
    parts: dict[str, float]
    #: d loss / d wrt[i] (None where ``wrt[i]`` does not influence the loss)
    grads: list[torch.Tensor | None]


def student(u: Unroll) -> torch.Tensor:
    """The student's final parameters (flat), keeping the whole graph of the unroll."""
    theta = u.start.clone().requires_grad_(True)
    for k in range(u.steps):
        theta = u.update(theta, k, create_graph=True)
    return theta


class UnrollBackend(Component):
    """Base class of unroll backends: how a distiller runs the model with substituted parameters
    (:meth:`prepare`) and differentiates the matching loss through the student's steps (:meth:`run`).

    The default :meth:`run` keeps the graph of every step (memory grows with the steps) and is the
    reference every other backend is tested against.
    """

    #: whether :meth:`run` gives the exact gradient of the full unroll (False: an approximation)
    exact: ClassVar[bool] = True

    @abstractmethod
    def prepare(self, model: DualEncoder) -> ForwardFn:
        """``forward(params, **inputs) -> (img_emb, txt_emb)`` where ``params`` maps the model's
        trainable parameter names to (non-leaf) tensors."""

    def run(self, u: Unroll, wrt: Sequence[torch.Tensor]) -> UnrollResult:
        """The matching loss of ``u`` and its gradients with respect to ``wrt``."""
        loss, parts = u.loss(student(u))
        grads = torch.autograd.grad(loss, list(wrt), allow_unused=True)
        return UnrollResult(float(loss.detach()), parts, list(grads))


class FuncBackend(UnrollBackend):
    """torch.func.functional_call, the full graph: works with every timm model and peft LoRA (reference)."""

    name = "func"

    def prepare(self, model):
        from torch.func import functional_call

        def forward(params, **inputs):
            return functional_call(model, params, args=(), kwargs=inputs, strict=False)
        return forward


def contrastive_step_loss(forward: ForwardFn, *, text: torch.Tensor, batches: Sequence[torch.Tensor],
                          images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                          temperature: float | None = None):
    """The plain student loss of bi-trajectory matching: the contrastive loss of minibatch
    ``batches[k]`` of the synthetic images (or their frozen-backbone ``features``) and texts."""
    kw = {} if temperature is None else {"temperature": temperature}
    key, x = ("features", features) if features is not None else ("images", images)

    def step_loss(params, k):
        idx = batches[k]
        img_emb, txt_emb = forward(params, **{key: x[idx]}, text=text[idx])
        return contrastive_loss(img_emb, txt_emb, **kw)
    return step_loss
