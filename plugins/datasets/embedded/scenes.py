"""Scene graphs and their captions for the ``embedded`` dataset: 1-3 coloured shapes on a
background, described by varied templates with synonyms, counts and spatial relations.
Everything is deterministic in (seed, split, index)."""
from __future__ import annotations

import random
from typing import Callable

GENERATOR_VERSION = "scenes-v1"

#: name -> (RGB, outline RGB)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "red": ((220, 35, 35), (110, 15, 15)),
    "orange": ((255, 140, 10), (140, 70, 0)),
    "yellow": ((250, 222, 30), (130, 110, 0)),
    "green": ((35, 175, 60), (10, 85, 25)),
    "blue": ((35, 85, 235), (10, 35, 120)),
    "purple": ((145, 55, 195), (70, 20, 100)),
    "white": ((246, 246, 246), (120, 120, 120)),
    "black": ((22, 22, 22), (120, 120, 120)),
}
_COLOUR_WORDS = {"red": ["red"], "orange": ["orange"], "yellow": ["yellow"], "green": ["green"],
                 "blue": ["blue"], "purple": ["purple", "violet"], "white": ["white"], "black": ["black"]}
_SHAPES = ["circle", "square", "triangle", "star", "diamond", "ring", "cross", "hexagon"]
_SHAPE_WORDS = {
    "circle": ["circle", "circle", "disc", "round shape"],
    "square": ["square", "square", "box", "block"],
    "triangle": ["triangle"],
    "star": ["star", "star", "five-pointed star"],
    "diamond": ["diamond", "diamond", "rhombus"],
    "ring": ["ring", "ring", "hoop", "donut"],
    "cross": ["cross", "cross", "plus sign"],
    "hexagon": ["hexagon", "hexagon", "six-sided shape"],
}
_SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "large": ["large", "large", "big", "huge"]}
#: background scene -> (top colour, bottom colour, noise amplitude)
SCENES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], float]] = {
    "sky": ((95, 160, 235), (185, 220, 250), 3.0),
    "grass": ((120, 190, 80), (45, 115, 35), 9.0),
    "sand": ((238, 214, 160), (205, 175, 115), 8.0),
    "night": ((8, 12, 40), (35, 45, 95), 3.0),
    "snow": ((226, 233, 242), (250, 250, 252), 4.0),
    "sunset": ((250, 150, 70), (150, 70, 130), 4.0),
}
#: colours that would vanish into a background
_CLASH = {("blue", "sky"), ("green", "grass"), ("yellow", "sand"), ("black", "night"),
          ("white", "snow"), ("orange", "sunset"), ("white", "sky")}
_BG_PHRASES = {  # "... <phrase>" after the objects
    "sky": ["against a blue sky", "on a blue sky background", "in the sky", "on a pale blue background"],
    "grass": ["on green grass", "on a grassy background", "in a field of grass", "on the grass"],
    "sand": ["on the sand", "on a sandy background", "on a beach", "on beige sand"],
    "night": ["against the night sky", "on a dark background", "at night", "on a dark blue night sky"],
    "snow": ["on white snow", "on a snowy background", "in the snow", "on a snowy field"],
    "sunset": ["against a sunset", "on an orange and purple sunset sky", "at sunset",
               "on a sunset background"],
}
_BG_NOUNS = {  # "<noun> with ..."
    "sky": ["a blue sky", "a sky scene", "a clear sky"],
    "grass": ["a grassy field", "a patch of green grass", "a grass scene"],
    "sand": ["a sandy beach", "a beach scene", "a stretch of sand"],
    "night": ["a night sky", "a dark night scene", "a night scene"],
    "snow": ["a snowy field", "a snow scene", "a white snowy landscape"],
    "sunset": ["a sunset sky", "a sunset scene", "an orange sunset"],
}
_REL_WORDS = {
    "above": ["above", "above", "over", "higher than"],
    "below": ["below", "below", "under", "beneath", "lower than"],
    "left": ["to the left of", "to the left of", "left of", "on the left of"],
    "right": ["to the right of", "to the right of", "right of", "on the right of"],
}
_INVERSE = {"above": "below", "below": "above", "left": "right", "right": "left"}
_POS_WORDS = {
    (0, 0): ["in the top left corner", "at the top left"],
    (0, 1): ["at the top", "at the top of the picture", "near the top"],
    (0, 2): ["in the top right corner", "at the top right"],
    (1, 0): ["on the left", "on the left side", "at the left"],
    (1, 1): ["in the middle", "in the centre", "in the center of the image"],
    (1, 2): ["on the right", "on the right side", "at the right"],
    (2, 0): ["in the bottom left corner", "at the bottom left"],
    (2, 1): ["at the bottom", "near the bottom", "at the bottom of the picture"],
    (2, 2): ["in the bottom right corner", "at the bottom right"],
}
_NUM_WORDS = {1: "one", 2: "two", 3: "three"}
_VERBS = ["is", "sits", "is placed", "appears", "floats"]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    last = last + "es" if last.endswith(("s", "x", "sh", "ch")) else last + "s"
    return f"{head} {last}" if head else last


class _Phrases:
    """Caption wording for one scene, drawing synonyms from ``rng``."""

    def __init__(self, scene: dict, rng: random.Random):
        self.s = scene
        self.rng = rng

    def adj(self, o: dict, size_p: float = 0.5, colour_p: float = 1.0) -> str:
        """"small red star" (size with probability ``size_p``)."""
        r = self.rng
        words = []
        if r.random() < size_p:
            words.append(r.choice(_SIZE_WORDS[o["size"]]))
        if r.random() < colour_p:
            words.append(r.choice(_COLOUR_WORDS[o["colour"]]))
        words.append(r.choice(_SHAPE_WORDS[o["shape"]]))
        return " ".join(words)

    def np(self, o: dict, size_p: float = 0.5, colour_p: float = 1.0) -> str:
        a = self.adj(o, size_p, colour_p)
        return f"{_article(a)} {a}"

    def the(self, o: dict, size_p: float = 0.3) -> str:
        return "the " + self.adj(o, size_p)

    def bg(self) -> str:
        return self.rng.choice(_BG_PHRASES[self.s["background"]])

    def bg_noun(self) -> str:
        return self.rng.choice(_BG_NOUNS[self.s["background"]])

    def pos(self, o: dict) -> str:
        return self.rng.choice(_POS_WORDS[(o["row"], o["col"])])

    def relation(self, a: dict, b: dict) -> str:
        """Where ``a`` is relative to ``b``: one of above/below/left/right (always true)."""
        dr, dc = b["row"] - a["row"], b["col"] - a["col"]
        vertical = "above" if dr > 0 else "below"
        horizontal = "left" if dc > 0 else "right"
        if dc == 0:
            return vertical
        if dr == 0:
            return horizontal
        return vertical if self.rng.random() < 0.5 else horizontal

    def rel(self, a: dict, b: dict) -> str:
        return self.rng.choice(_REL_WORDS[self.relation(a, b)])

    def listing(self, objs: list[dict], size_p: float = 0.5) -> str:
        parts = [self.np(o, size_p) for o in objs]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def maybe_bg(self, p: float = 0.4) -> str:
        return " " + self.bg() if self.rng.random() < p else ""


def _cap_list(p: _Phrases, objs: list[dict]) -> str:
    r, n = p.rng, len(objs)
    order = objs[:]
    r.shuffle(order)
    if n == 1:
        o = order[0]
        return r.choice([f"{p.np(o, 0.8)} {p.bg()}", f"a single {p.adj(o, 0.7)} {p.bg()}",
                         f"one {p.adj(o, 0.7)} {p.bg()}"])
    items = p.listing(order)
    return r.choice([f"{_NUM_WORDS[n]} shapes: {items} {p.bg()}", f"{items} {p.bg()}",
                     f"there are {_NUM_WORDS[n]} shapes {p.bg()}: {items}",
                     f"{p.bg_noun()} with {items}"])


def _cap_relation(p: _Phrases, objs: list[dict]) -> str | None:
    if len(objs) < 2:
        return None
    r = p.rng
    a, b = r.sample(objs, 2)
    rel = p.rel(a, b)
    text = r.choice([f"{p.np(a)} {rel} {p.np(b)}", f"{p.np(a)} {r.choice(_VERBS)} {rel} {p.np(b)}",
                     f"there is {p.np(a)} {rel} {p.np(b)}", f"{p.the(a)} is {rel} {p.the(b)}"])
    if len(objs) == 3 and r.random() < 0.5:
        c = next(o for o in objs if o is not a and o is not b)
        text += r.choice([f", and {p.np(c)} {p.pos(c)}", f" with {p.np(c)} {p.rel(c, b)} it",
                          f"; there is also {p.np(c)}"])
    return text + p.maybe_bg(0.3)


def _cap_position(p: _Phrases, objs: list[dict]) -> str:
    r = p.rng
    if len(objs) >= 2 and r.random() < 0.5:
        a, b = r.sample(objs, 2)
        return f"{p.np(a)} {p.pos(a)} and {p.np(b)} {p.pos(b)}" + p.maybe_bg(0.3)
    o = r.choice(objs)
    return r.choice([f"{p.np(o, 0.6)} {p.pos(o)}", f"{p.pos(o)} there is {p.np(o, 0.6)}",
                     f"{p.np(o, 0.6)} {r.choice(_VERBS)} {p.pos(o)}"]) + p.maybe_bg(0.5)


def _cap_count(p: _Phrases, objs: list[dict]) -> str:
    r, n = p.rng, len(objs)
    shapes = {o["shape"] for o in objs}
    colours = {o["colour"] for o in objs}
    if n == 1:
        o = objs[0]
        return r.choice([f"a picture with just one shape, {p.np(o)}",
                         f"only one object: {p.np(o, 0.8)}"]) + p.maybe_bg(0.3)
    if n >= 2 and len(shapes) == 1:
        shape = _plural(r.choice(_SHAPE_WORDS[objs[0]["shape"]]))
        cols = [r.choice(_COLOUR_WORDS[o["colour"]]) for o in objs]
        return f"{_NUM_WORDS[n]} {shape}, " + " and ".join(f"{_article(c)} {c} one" for c in cols) \
            + p.maybe_bg(0.3)
    if n >= 2 and len(colours) == 1:
        col = r.choice(_COLOUR_WORDS[objs[0]["colour"]])
        names = [r.choice(_SHAPE_WORDS[o["shape"]]) for o in objs]
        return f"{_NUM_WORDS[n]} {col} shapes: " + " and ".join(f"{_article(x)} {x}" for x in names) \
            + p.maybe_bg(0.3)
    o = r.choice(objs)
    return r.choice([f"{_NUM_WORDS[n]} shapes, one of them {p.np(o)}",
                     f"{_NUM_WORDS[n]} objects including {p.np(o)}",
                     f"{_NUM_WORDS[n]} coloured shapes {p.bg()}"])


def _cap_partial(p: _Phrases, objs: list[dict]) -> str:
    r = p.rng
    o = r.choice(objs)
    return r.choice([f"a picture of {p.np(o, 0.5, 0.9)}", f"an image showing {p.np(o, 0.5, 0.9)}",
                     f"{p.np(o, 0.7)} {p.bg()}", f"{p.np(o, 0.4)}",
                     f"a simple drawing of {p.np(o, 0.5)}"])


def _cap_background(p: _Phrases, objs: list[dict]) -> str:
    r, n = p.rng, len(objs)
    if n == 1 or r.random() < 0.5:
        o = r.choice(objs)
        text = f"{p.bg_noun()} with {p.np(o, 0.6)}"
        if n == 1 and r.random() < 0.5:
            text += f" {p.pos(o)}"
        return text
    return f"{p.bg_noun()} with {_NUM_WORDS[n]} shapes"


_FAMILIES: list[Callable[[_Phrases, list[dict]], str | None]] = [
    _cap_list, _cap_relation, _cap_position, _cap_count, _cap_partial, _cap_background]


def make_scene(seed: int, split: str, index: int) -> dict:
    """The scene graph of image ``index`` of ``split``: background and 1-3 objects (deterministic)."""
    rng = random.Random(f"{GENERATOR_VERSION}|{seed}|{split}|{index}")
    background = rng.choice(list(SCENES))
    n = rng.choices((1, 2, 3), weights=(0.25, 0.45, 0.30))[0]
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n)
    objs: list[dict] = []
    used: set[tuple[str, str]] = set()
    for row, col in cells:
        while True:
            shape = rng.choice(_SHAPES)
            colour = rng.choice(list(COLOURS))
            if (colour, background) not in _CLASH and (shape, colour) not in used:
                break
        used.add((shape, colour))
        size = rng.choice(("small", "large"))
        radius = (0.145 if size == "large" else 0.085) * rng.uniform(0.92, 1.08)
        slack = max(0.0, 1 / 6 - radius - 0.01)
        cx = (col + 0.5) / 3 + rng.uniform(-slack, slack)
        cy = (row + 0.5) / 3 + rng.uniform(-slack, slack)
        objs.append({"shape": shape, "colour": colour, "size": size, "row": row, "col": col,
                     "cx": cx, "cy": cy, "r": radius, "angle": rng.uniform(-0.12, 0.12),
                     "tint": [rng.randint(-12, 12) for _ in range(3)]})
    return {"background": background, "objects": objs, "noise_seed": rng.getrandbits(63),
            "bg_tint": [rng.randint(-10, 10) for _ in range(3)], "bg_phase": rng.random()}


def make_captions(scene: dict, seed: int, split: str, index: int, k: int = 5) -> list[str]:
    """``k`` differently-worded captions of ``scene`` from distinct template families."""
    rng = random.Random(f"{GENERATOR_VERSION}|captions|{seed}|{split}|{index}")
    p = _Phrases(scene, rng)
    objs = scene["objects"]
    families = [f for f in _FAMILIES if not (f is _cap_relation and len(objs) < 2)]
    rng.shuffle(families)
    if len(objs) >= 2:  # spatial relations are the most informative: always include one
        families.remove(_cap_relation)
        families.insert(0, _cap_relation)
    queue = families[:]  # one caption per family first, then any family again
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < k and attempts < 60:
        fam = queue.pop(0) if queue else rng.choice(families)
        attempts += 1
        text = fam(p, objs)
        if text is None:
            continue
        text = " ".join(text.split())
        if text not in seen:
            seen.add(text)
            out.append(text)
    while len(out) < k:  # practically unreachable; keeps the count exact
        out.append(f"{out[0]} ({len(out)})")
    return out

