"""Data roots and the helpers the loaders share (array conversion, channel statistics, JPEG decoding, errors)."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, FormatError
from .dataset import DataNotFoundError


# --------------------------------------------------------------------------------------------------------------------
# Roots


def default_data_root() -> Path:
    """``$DATACOMP_DATA`` or ``~/.cache/datacomp/data``."""
    return Path(os.environ.get("DATACOMP_DATA", Path.home() / ".cache" / "datacomp" / "data")).expanduser()


def shared_data_root() -> Path | None:
    """``$DATACOMP_SHARED_DATA`` if it is set and exists (offline copies of real datasets)."""
    value = os.environ.get("DATACOMP_SHARED_DATA")
    if value and Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    return None


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _nhwc_uint8_to_tensor(x: np.ndarray) -> torch.Tensor:
    if x.ndim == 3:  # [N, H, W] grey
        x = x[..., None]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def read_image(source: Path | io.BytesIO, what: str, rgb: bool = True) -> np.ndarray:
    """One image file as a ``uint8`` array (``[H, W, 3]``; grey ``[H, W]`` kept when ``rgb=False``).

    A file that is not a readable image raises :class:`~datacomp.errors.DataError` naming it and the fix.
    """
    try:
        with Image.open(source) as im:
            return np.asarray(im.convert("RGB") if rgb or im.mode not in ("L", "RGB") else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{what}: cannot read the image ({type(err).__name__}: {err}); replace or remove the file "
                        "(it is truncated, corrupt or not an image)") from None


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray, what: str = "JPEG archive") -> np.ndarray:
    data = blob.tobytes()

    def decode(i: int) -> np.ndarray:
        return read_image(io.BytesIO(data[offsets[i] : offsets[i + 1]]), f"{what}, image {i}")

    first = decode(0)
    out = np.empty((len(offsets) - 1, *first.shape), dtype=np.uint8)
    for i in range(len(offsets) - 1):  # image decoding has no batched form; ~5 s for 50k 32x32 JPEGs
        out[i] = decode(i)
    return out


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (never unpickled); a corrupt file raises :class:`~datacomp.errors.FormatError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise FormatError(f"{what}: {path} is not a readable .npz file ({type(err).__name__}: {err}); re-create or "
                          "replace it") from None


def _missing(name: str, root: Path, expected: str) -> DataNotFoundError:
    """One line (a CLI prints it as ``prog: error: ...``): where it looked, what it expected, how to fix it."""
    shared = os.environ.get("DATACOMP_SHARED_DATA")
    offline = name in ("cifar10", "mnist")
    return DataNotFoundError(
        f"dataset '{name}': files not found in {root} (--data-root / $DATACOMP_DATA). "
        f"Expected (torchvision layout): {expected}. "
        + (f"The offline copies in $DATACOMP_SHARED_DATA={shared} have none. " if shared else "")
        + "Fix: place those files there, or pass --download (needs network access)"
        + (", or set DATACOMP_SHARED_DATA to a folder holding the offline copies" if offline else "") + "."
    )
