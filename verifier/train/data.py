"""MNIST in IDX format (gzipped or not): images as float64 in [0, 1], labels as int64.

The IDX format: a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the data (type 0x08: unsigned bytes). Images are scaled by 1/255.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLITS = {"test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
          "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}


def read_idx(path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` read through gzip)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    count = int(np.prod(shape, dtype=np.int64))
    body = 4 + 4 * ndim
    if len(data) - body != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {shape} of {dtype} but the file holds "
                         f"{len(data) - body} bytes of data")
    return np.frombuffer(data, dtype, count=count, offset=body).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"no {stem}[.gz] in {root}")


def load_mnist(root, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("test" or "train") from the folder ``root``: images (N, 1, 28, 28)
    float64 in [0, 1] and labels (N,) int64."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (test, train)")
    root = Path(root)
    images = read_idx(_find(root, SPLITS[split][0]))
    labels = read_idx(_find(root, SPLITS[split][1]))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"MNIST files in {root} have shapes {images.shape} and {labels.shape}")
    X = images.astype(np.float64)[:, None] / 255.0
    return X, labels.astype(np.int64)
