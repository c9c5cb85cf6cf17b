"""Small data loaders for demos, tests and benchmarks.  Nothing is ever downloaded.

* :func:`load_digits` -- scikit-learn's bundled 8x8 digits (1797 images), shape [N, 1, 8, 8].
* :func:`load_mnist` -- MNIST from IDX files (``.gz`` or raw) in a directory the user gives.

Example::

    >>> train, val, test = load_digits(batch_size=64)      # doctest: +SKIP
    >>> x, y = next(iter(train)); tuple(x.shape[1:])        # doctest: +SKIP
    (1, 8, 8)
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

logger = logging.getLogger(__name__)

Loaders = tuple[DataLoader, DataLoader, DataLoader]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _split(n: int, n_val: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def _loaders(x: torch.Tensor, y: torch.Tensor, parts, batch_size: int, seed: int) -> Loaders:
    tr, va, te = parts
    g = torch.Generator().manual_seed(seed)
    return (
        DataLoader(TensorDataset(x[tr], y[tr]), batch_size=batch_size, shuffle=True, generator=g),
        DataLoader(TensorDataset(x[va], y[va]), batch_size=256, shuffle=False),
        DataLoader(TensorDataset(x[te], y[te]), batch_size=256, shuffle=False),
    )


def load_digits(batch_size: int = 64, val_fraction: float = 0.15, test_fraction: float = 0.2,
                seed: int = 0) -> Loaders:
    """(train, val, test) loaders over scikit-learn's bundled digits, images scaled to [0, 1].

    Needs scikit-learn (``pip install sparsecomp[examples]``); the data ships with it.
    """
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as exc:  # pragma: no cover
        raise ImportError("load_digits needs scikit-learn: pip install 'sparsecomp[examples]'") from exc
    d = _sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    n = len(y)
    parts = _split(n, int(n * val_fraction), int(n * test_fraction), seed)
    return _loaders(x, y, parts, batch_size, seed)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({arr.size} values, header says {dims})")
    return arr.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"{root}: no {stem}[.gz] (MNIST IDX files are never downloaded; pass --data DIR)")


def default_mnist_dir(repo_root: str | os.PathLike | None = None) -> Path | None:
    """``../shared/data/mnist`` relative to the repository, when it exists."""
    root = Path(repo_root) if repo_root is not None else Path(__file__).resolve().parent.parent
    cand = (root / ".." / "shared" / "data" / "mnist").resolve()
    return cand if cand.is_dir() else None


def load_mnist(root: str | os.PathLike, batch_size: int = 128, val_size: int = 5000, seed: int = 0,
               limit_train: int | None = None) -> Loaders:
    """(train, val, test) loaders over MNIST IDX files in ``root``; pixels scaled to [0, 1],
    images [N, 1, 28, 28].  ``val_size`` images are held out of the 60k training set (seeded);
    the 10k test set is only for reporting."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST directory {root} does not exist (MNIST is never downloaded)")
    xtr = read_idx(_find(root, "train-images-idx3-ubyte"))
    ytr = read_idx(_find(root, "train-labels-idx1-ubyte"))
    xte = read_idx(_find(root, "t10k-images-idx3-ubyte"))
    yte = read_idx(_find(root, "t10k-labels-idx1-ubyte"))
    to_x = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1) / 255.0  # noqa: E731
    x_tr, y_tr = to_x(xtr), torch.tensor(ytr, dtype=torch.long)
    perm = np.random.default_rng(seed).permutation(len(y_tr))
    va, tr = perm[:val_size], perm[val_size:]
    if limit_train is not None:
        tr = tr[:limit_train]
    g = torch.Generator().manual_seed(seed)
    return (
        DataLoader(TensorDataset(x_tr[tr], y_tr[tr]), batch_size=batch_size, shuffle=True, generator=g),
        DataLoader(TensorDataset(x_tr[va], y_tr[va]), batch_size=1000, shuffle=False),
        DataLoader(TensorDataset(to_x(xte), torch.tensor(yte, dtype=torch.long)), batch_size=1000, shuffle=False),
    )
