"""Exports of a :class:`~datacomp.synset.SyntheticSet` to image files: a class-by-row PNG grid and an ImageFolder tree
(one PNG per image). The set's methods ``to_png_grid`` / ``to_imagefolder`` call these (``synset`` is a
SyntheticSet; this module does not import it, since the set's module imports this one)."""

from __future__ import annotations

import io as _bytes_io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .io import atomic_write

__all__ = ["png_grid", "imagefolder"]


def _pil_image(pixels: np.ndarray):
    from PIL import Image  # optional at import time: only exports need Pillow

    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def png_grid(synset: Any, path: str | os.PathLike, max_per_class: int = 10,
             upscale: int | None = None) -> Path:
    """Save a class-by-row PNG grid of (up to ``max_per_class``) images per class, atomically."""
    from PIL import Image

    x = synset.pixel_images().clamp(0, 1)
    y = synset.hard_labels
    c, h, w = x.shape[1:]
    rows = [x[y == k][:max_per_class] for k in range(synset.num_classes)]
    cols = max(1, max(len(r) for r in rows))
    upscale = upscale or max(1, 32 // max(h, w))
    pad = 1
    canvas = torch.ones(c, len(rows) * (h + pad) + pad, cols * (w + pad) + pad)
    for i, r in enumerate(rows):
        for j in range(len(r)):  # at most classes x max_per_class tiles: a tiny, bounded loop
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, top : top + h, left : left + w] = r[j]
    img = _pil_image((canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    buffer = _bytes_io.BytesIO()
    img.save(buffer, format="PNG")
    return atomic_write(path, buffer.getvalue())


def imagefolder(synset: Any, folder: str | os.PathLike, class_names: Sequence[str] | None = None) -> Path:
    """Write one PNG per image under ``folder/<class>/`` (readable by torchvision's ImageFolder)."""
    folder = Path(folder)
    names = list(class_names) if class_names is not None else [f"{k:03d}" for k in range(synset.num_classes)]
    x = (synset.pixel_images().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, (img, label) in enumerate(zip(x, synset.hard_labels.tolist(), strict=True)):
        d = folder / names[label]
        d.mkdir(parents=True, exist_ok=True)
        _pil_image(img).save(d / f"{i:06d}.png")
    return folder
