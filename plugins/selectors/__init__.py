"""Coreset selectors (installed as ``vlcore.plugins.selectors``; on disk ``plugins/selectors/``): the paper's four baselines (random, herding, k-center, forgetting) adapted to
image-caption pairs, which have no classes.

A selector chooses ``budget`` real training pairs; ``vl coreset`` saves them as the same pair-set
artifact that distillation writes, so ``vl eval`` scores both alike.

**Pairs, not images.**  A budget of N is N image-caption pairs.  With ``unique_images=True`` (the
default) a coreset holds at most one caption per image, so N pairs are N distinct images -- the
fair comparison with a distilled set of N (image, text) pairs.  With ``unique_images=False`` several
captions of one image may be chosen.  The budget may not exceed the number of pairs (of images when
``unique_images`` is on).

**The embedding space** (option ``space`` of herding and k-center):

* ``expert`` (default): the concatenation ``[normalise(image embedding), normalise(text
  embedding)]`` of a trained dual encoder, one row per pair (the image half is shared by the
  captions of one image).  With ``--buffer`` the model is the buffer's expert ``expert`` (default 0)
  at its *final* epoch, built with the buffer's model spec.  Without a buffer, a quick model is
  trained on the training split exactly like an expert (SGD lr 0.1, no momentum or weight decay,
  batch 128, ``epochs`` epochs, default 5; the backbone's features are cached and only the heads
  train when the spec's backbone is frozen), seeded with the selection seed.
* ``raw``: ``[normalise(backbone features), normalise(caption embedding)]`` -- the image encoder's
  *initial* (pretrained) global features and the frozen text encoder's output, no training.  This
  only makes sense for a pretrained encoder (e.g. ``effnet-lite0``); the ``convnet`` has no
  pretrained weights, so its raw features are those of a random network and mean little.

**The methods.**

* ``random``: a seeded uniformly random order of the pairs, taken in order (skipping pairs whose
  image is already chosen when ``unique_images``).
* ``herding`` (Welling 2009; Chen et al. 2010): greedy; at step t it adds the pair x minimising
  ``||mu - (s + x) / t||`` where mu is the mean of *all* training pairs and s the sum of those
  chosen so far, so the running mean of the coreset tracks the data mean.  Deterministic given the
  space (the seed only enters through the quick model, if one is trained).
* ``kcenter``: greedy farthest-point (k-center greedy, Gonzalez 1985; Sener & Savarese 2018): each
  new center is the pair farthest from its nearest chosen center.  Its covering radius is at most
  twice the optimal one (without the unique-images constraint).  The first center is drawn at
  random with the seed (``first="random"``, default) or is the pair nearest the mean
  (``first="mean"``).
* ``forgetting`` (Toneva et al., ICLR 2019): a fresh model trains ``epochs`` epochs (default 10) on
  the training split with the experts' SGD.  After every forward pass each pair of the minibatch is
  *learned* when it is retrieved top-1 within its batch in either direction: its image's row of the
  batch similarity matrix peaks at its caption (image -> text), or its caption's column peaks at its
  image (text -> image); a retrieved pair of the *same image* counts as correct, since several
  captions of one image can share a batch.  A *forgetting event* is a change from learned to not
  learned between two consecutive presentations of the pair.  The pairs with the most events are
  chosen; pairs never learned rank above all others (as in Toneva et al., they count as forgotten
  infinitely often); remaining ties are broken at random with the seed.  With ``unique_images`` the
  ranking is walked down skipping pairs whose image is already taken.  Forgetting always trains
  its own model (``--buffer`` only sets the default model spec and dataset).

Large datasets: herding and k-center never build an N x N matrix.  Herding keeps the running sum
and scores every candidate with one matrix-vector product per step, k-center keeps each pair's
squared distance to its nearest center and updates it with one matrix-vector product per new
center: O(N d) time and memory per step, float32.

The pure algorithms (:func:`herding`, :func:`kcenter_greedy`, :class:`ForgettingTracker`,
:func:`take_in_order`) work on plain tensors and are tested against brute-force references.

**Writing a selector.**  Subclass :class:`vlcore.components.Selector`; ``select(ctx)`` gets a
:class:`SelectContext` (the budget and seed are ``ctx.budget`` and ``ctx.seed``) and returns a :class:`Selection` (or just a tensor / list of pair
indices into ``ctx.train``, in the order chosen).  :func:`run_selector` checks the answer (budget
distinct pairs, one per image when the config has ``unique_images`` on) and builds the artifact.

``algorithms.py`` holds the pure tensor functions, ``components.py`` the embedding spaces and the
registered selector classes; the artifact logic (:func:`vlcore.distill.coreset.run_selector`) is in the core.
"""
from __future__ import annotations

from vlcore import hookimpl

from .components import ForgettingSelector, HerdingSelector, KCenterSelector, RandomSelector

SELECTORS = (RandomSelector, HerdingSelector, KCenterSelector, ForgettingSelector)


@hookimpl
def register_selectors(register):
    for cls in SELECTORS:
        register(cls)
