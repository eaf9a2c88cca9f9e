"""Multi-formation parameterisation (IDC, used by NCFM with factor 2).

A stored image holds a ``factor x factor`` mosaic; decoding cuts it into tiles and upsamples every tile back to full
size (bilinear), so one stored image yields ``factor**2`` training images at the same storage budget. Decoding is
:func:`datacomp.synset.decode_multiformation` (the one definition the evaluator also uses); this module adds the
inverse used for initialisation: a mosaic of ``factor**2`` real images, each downsampled to one tile.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from datacomp.errors import ConfigError
from datacomp.synset import decode_multiformation

__all__ = ["decode", "encode_mosaic", "check_factor", "resolve_factor", "AUTO_MIN_TILE"]

AUTO_MIN_TILE = 8


def resolve_factor(factor: int, image_size: tuple[int, int]) -> int:
    """``factor`` as given, or for ``0`` (auto): 2 when 2x2 tiles keep at least ``AUTO_MIN_TILE`` pixels a side
    and the sides are even, else 1."""
    if factor:
        return factor
    h, w = image_size
    return 2 if h % 2 == 0 and w % 2 == 0 and min(h, w) // 2 >= AUTO_MIN_TILE else 1


def check_factor(image_size: tuple[int, int], factor: int) -> None:
    """Raise :class:`~datacomp.errors.ConfigError` unless ``factor`` divides both image sides (and leaves tiles of at least 2 pixels)."""
    h, w = image_size
    if not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"factor must be an int >= 1, got {factor!r}")
    if h % factor or w % factor or h // factor < 2 or w // factor < 2:
        raise ConfigError(
            f"factor={factor} does not fit {h}x{w} images: each side must be divisible by it and leave tiles of at "
            f"least 2 pixels; use --factor 1 (no multi-formation) or a factor dividing {h} and {w}"
        )


def decode(images: Tensor, factor: int) -> Tensor:
    """``[n, C, H, W]`` stored images -> ``[n * factor**2, C, H, W]`` training images (image-major tile order)."""
    return decode_multiformation(images, factor)


def encode_mosaic(images: Tensor, factor: int) -> Tensor:
    """Pack ``factor**2`` consecutive images into one mosaic each (the real-mosaic initialisation).

    Args:
        images: ``[n * factor**2, C, H, W]``; images ``k*f^2 .. (k+1)*f^2 - 1`` form stored image ``k`` in row-major
            tile order (so :func:`decode` returns them, downsampled then upsampled, in the same order).
        factor: Tiles per side.

    Returns:
        ``[n, C, H, W]`` mosaics.
    """
    if factor == 1:
        return images.clone()
    total, c, h, w = images.shape
    check_factor((h, w), factor)
    per = factor * factor
    if total % per:
        raise ConfigError(f"encode_mosaic needs a multiple of factor**2={per} images, got {total}")
    th, tw = h // factor, w // factor
    tiles = F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    n = total // per
    mosaic = tiles.reshape(n, factor, factor, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
    return mosaic.contiguous()

