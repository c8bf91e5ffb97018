"""Drawing a scene graph of :mod:`.scenes` as an RGB image (numpy background + PIL shapes)."""
from __future__ import annotations

import math

import numpy as np

from .scenes import COLOURS, SCENES


def _polygon(cx: float, cy: float, r: float, n: int, start: float, inner: float | None = None) -> list:
    pts = []
    steps = n * 2 if inner is not None else n
    for i in range(steps):
        a = start + 2 * math.pi * i / steps
        rad = r if inner is None or i % 2 == 0 else r * inner
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _rotate(pts: list, cx: float, cy: float, angle: float) -> list:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts]


def _background(scene: dict, size: int) -> np.ndarray:
    """(size, size, 3) float32 background: a vertical gradient, texture and noise."""
    name = scene["background"]
    top, bottom, amp = SCENES[name]
    rng = np.random.default_rng(scene["noise_seed"])
    tint = np.asarray(scene["bg_tint"], np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    img = (np.asarray(top, np.float32) + tint) * (1 - t) + (np.asarray(bottom, np.float32) + tint) * t
    img = np.broadcast_to(img, (size, size, 3)).copy()
    half = max(1, size // 2)
    noise = rng.standard_normal((half, half, 1), dtype=np.float32) * amp
    img += np.repeat(np.repeat(noise, 2, 0), 2, 1)[:size, :size]
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    if name == "grass":  # vertical blades
        blades = rng.standard_normal((1, size), dtype=np.float32) * 10.0
        img += (blades * (0.4 + 0.6 * (y / size)))[..., None]
    elif name == "sand":  # gentle ripples
        ripple = np.sin((y / size * 9.0 + x / size * 1.5 + scene["bg_phase"]) * 2 * math.pi) * 6.0
        img += ripple[..., None]
    elif name == "sunset":  # soft horizontal bands
        img += (np.sin((y / size * 5.0 + scene["bg_phase"]) * 2 * math.pi) * 5.0)[..., None]
    elif name == "sky":  # faint flat clouds
        for _ in range(2):
            cx, cy = rng.uniform(0, size), rng.uniform(0, size)
            rx, ry = rng.uniform(0.2, 0.35) * size, rng.uniform(0.05, 0.09) * size
            mask = np.clip(1.0 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2, 0, 1) * 0.35
            img += (255.0 - img) * mask[..., None]
    elif name == "night":  # a few faint specks
        for _ in range(int(rng.integers(4, 9))):
            yy, xx = int(rng.integers(0, size)), int(rng.integers(0, size))
            img[yy, xx] += 110.0
    elif name == "snow":  # speckles
        img += (rng.random((size, size, 1), dtype=np.float32) > 0.97) * -18.0
    return img


def render_scene(scene: dict, size: int = 64):
    """Draw ``scene`` as a ``size``-pixel RGB PIL image (drawn at 2x and downsampled)."""
    from PIL import Image, ImageDraw

    big = 2 * size
    bg = _background(scene, big)
    bg8 = np.clip(bg, 0, 255).astype(np.uint8)
    img = Image.fromarray(bg8, "RGB")
    bg_img = None
    draw = ImageDraw.Draw(img)
    width = max(2, big // 64)
    for o in scene["objects"]:
        fill = tuple(int(min(255, max(0, c + d))) for c, d in zip(COLOURS[o["colour"]][0], o["tint"]))
        line = COLOURS[o["colour"]][1]
        cx, cy, r, ang = o["cx"] * big, o["cy"] * big, o["r"] * big, o["angle"]
        shape = o["shape"]
        if shape in ("circle", "ring"):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=line, width=width)
            ri = r - max(3.0, 0.4 * r)
            if shape == "ring" and ri > 1.0:  # punch a hole that shows the background (if it fits)
                box = (cx - ri, cy - ri, cx + ri, cy + ri)
                if bg_img is None:
                    bg_img = Image.fromarray(bg8, "RGB")
                mask = Image.new("L", img.size, 0)
                ImageDraw.Draw(mask).ellipse(box, fill=255)
                img.paste(bg_img, (0, 0), mask)
                draw.ellipse(box, outline=line, width=width)
        else:
            if shape == "square":
                pts = _rotate(_polygon(cx, cy, r * 1.2, 4, math.pi / 4), cx, cy, ang)
            elif shape == "diamond":
                pts = _polygon(cx, cy, r * 1.15, 4, -math.pi / 2)
                pts = [(cx + (x - cx) * 0.8, y) for x, y in pts]  # a little taller than wide
            elif shape == "triangle":
                pts = _polygon(cx, cy + 0.12 * r, r * 1.2, 3, -math.pi / 2)
            elif shape == "star":
                pts = _rotate(_polygon(cx, cy, r * 1.25, 5, -math.pi / 2, inner=0.45), cx, cy, ang)
            elif shape == "hexagon":
                pts = _polygon(cx, cy, r * 1.05, 6, 0.0)
            elif shape == "cross":
                a, b = r * 1.05, r * 0.36
                pts = [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b),
                       (cx + a, cy + b), (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a),
                       (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b)]
                pts = _rotate(pts, cx, cy, ang)
            else:  # pragma: no cover - all shapes are handled above
                raise ValueError(shape)
            draw.polygon(pts, fill=fill, outline=line, width=width)
    return img.resize((size, size), Image.Resampling.BOX)

