"""Checks that a PNG is a real, non-trivial picture: size, dimensions, colours actually drawn."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def dimensions(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert head[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def colour_share(path: Path, rgb: tuple[float, float, float], tol: float = 0.12) -> float:
    """Fraction of pixels within `tol` of an RGB colour (0..1 floats)."""
    import matplotlib.image

    img = np.asarray(matplotlib.image.imread(str(path)))[..., :3]
    close = np.all(np.abs(img - np.asarray(rgb)) < tol, axis=-1)
    return float(close.mean())


TAB_BLUE = (0.122, 0.467, 0.706)
TAB_RED = (0.839, 0.153, 0.157)
TAB_ORANGE = (1.0, 0.498, 0.055)
TAB_PURPLE = (0.580, 0.404, 0.741)
