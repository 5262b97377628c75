"""Real image data from local files: scikit-learn's bundled 8×8 digits, MNIST (IDX files) and
CIFAR-10 (python pickle batches) from a folder you name. Nothing is downloaded.

Each loader returns a ``jaxscape.data.Dataset(x, y)``, checks what it reads (missing folder,
wrong magic number, truncated file, labels out of range) and says which file is wrong. The
loaders are also reachable as ``jaxscape.data.load_mnist`` etc.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscape._checks import check_choice
from jaxscape.data import Dataset

_LAYOUTS = ("image", "flat", "sequence")


def load_digits(*, layout: str = "image", dtype=jnp.float32) -> Dataset:
    """scikit-learn's 1,797 8×8 handwritten digits (UCI), bundled with it: no download.

    Needs the optional extra: ``pip install 'jaxscape[data]'``.

    Args:
      layout: ``"image"`` → ``x`` of shape ``(1797, 8, 8, 1)`` (NHWC, for CNNs); ``"flat"`` →
        ``(1797, 64)``; ``"sequence"`` → ``(1797, 8, 8)``, 8 rows of 8 pixels (for LSTMs).
      dtype: a float dtype scales the pixels (0..16) to [0, 1]; ``uint8`` keeps 0..16.

    Returns:
      ``Dataset(x, y)`` with int32 labels ``y`` in 0..9, shape ``(1797,)``.

    >>> load_digits(layout="flat").x.shape  # doctest: +SKIP
    (1797, 64)
    """
    fn = "load_digits"
    check_choice(fn, "layout", layout, _LAYOUTS)
    _check_pixel_dtype(fn, dtype)
    try:
        from sklearn import datasets
    except ImportError as err:
        raise ImportError(
            f"{fn} needs scikit-learn, which bundles the digits (no download): "
            "pip install 'jaxscape[data]'"
        ) from err
    x, y = datasets.load_digits(return_X_y=True)
    images = _layout(x.reshape(-1, 8, 8, 1), layout)
    return Dataset(_pixels(images, dtype, 16), jnp.asarray(y.astype(np.int32)))


_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST = {"images": 0x00000803, "labels": 0x00000801}


def load_mnist(
    path: str | os.PathLike, *, split: str = "train", layout: str = "image", dtype=jnp.float32
) -> Dataset:
    """MNIST (or Fashion-MNIST, which uses the same files) from the IDX files in folder ``path``.

    The folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` (split
    ``"train"``) and ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (``"test"``), each
    raw or gzipped (``.gz``), as distributed. Nothing is downloaded. Files are checked: magic
    number, declared against actual size, matching counts, labels in [0, 10).

    Args:
      path: the folder.
      split: ``"train"`` or ``"test"``.
      layout: ``"image"`` → ``(N, 28, 28, 1)`` (NHWC); ``"flat"`` → ``(N, 784)``;
        ``"sequence"`` → ``(N, 28, 28)`` (28 rows of 28 pixels, for LSTMs).
      dtype: a float dtype scales the pixels to [0, 1]; ``uint8`` keeps the raw bytes.

    Returns:
      ``Dataset(x, y)`` with int32 labels ``y`` of shape ``(N,)``.

    >>> train = load_mnist("~/data/mnist", layout="flat")  # doctest: +SKIP
    >>> train.x.shape, train.y.shape  # doctest: +SKIP
    ((60000, 784), (60000,))
    """
    fn = "load_mnist"
    check_choice(fn, "split", split, ("train", "test"))
    check_choice(fn, "layout", layout, _LAYOUTS)
    _check_pixel_dtype(fn, dtype)
    names = [
        f"{p}-{kind}"
        for p in ("train", "t10k")
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]
    expected = f"the MNIST files {', '.join(names)} (each raw or .gz)"
    folder = _folder(fn, path, expected)
    prefix = "train" if split == "train" else "t10k"
    arrays = {}
    for what in ("images", "labels"):
        name = f"{prefix}-{what}-idx{3 if what == 'images' else 1}-ubyte"
        found = [folder / n for n in (name, name + ".gz") if (folder / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"{fn}: no {name} or {name}.gz in {folder} (which holds "
                f"{sorted(p.name for p in folder.iterdir())[:8]}); expected {expected}."
            )
        arrays[what] = (found[0], _read_idx(fn, found[0], _MNIST[what], what))
    (img_path, images), (lbl_path, labels) = arrays["images"], arrays["labels"]
    if len(images) != len(labels):
        raise ValueError(
            f"{fn}: {img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} "
            "labels; the two files must come from the same split."
        )
    _check_labels(fn, labels, lbl_path)
    x = _pixels(_layout(images[..., None], layout), dtype, 255)
    return Dataset(x, jnp.asarray(labels.astype(np.int32)))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in one IDX file (raw, or gzipped when the name ends in ``.gz``).

    IDX: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
    float32, 0x0E float64), the number of dimensions, each dimension as a big-endian uint32,
    then the data in C order, big-endian. Raises ``ValueError`` on a wrong magic or a size that
    differs from the header's.

    >>> import tempfile; folder = tempfile.mkdtemp()
    >>> read_idx(write_idx(f"{folder}/a-idx1-ubyte.gz", np.arange(3, dtype=np.uint8)))
    array([0, 1, 2], dtype=uint8)
    """
    return _read_idx("read_idx", Path(path).expanduser())


def write_idx(path: str | os.PathLike, array: Any) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``); returns the path.

    The inverse of ``read_idx``, e.g. to save a subset of MNIST: ``write_idx(folder /
    "train-images-idx3-ubyte", images[:1000])``. Dtypes: uint8, int8, int16, int32, float32,
    float64.
    """
    a = np.asarray(array)
    big = a.dtype.newbyteorder(">")
    codes = [c for c, t in _IDX_TYPES.items() if np.dtype(t) == big]
    if not codes or a.ndim > 255:
        raise ValueError(
            f"write_idx: `array` must have an IDX dtype (uint8, int8, int16, int32, float32, "
            f"float64) and at most 255 dimensions, got {a.dtype} with {a.ndim}."
        )
    header = bytes([0, 0, codes[0], a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
    raw = header + np.ascontiguousarray(a, big).tobytes()
    path = Path(path).expanduser()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    return path


def load_cifar10(
    path: str | os.PathLike, *, split: str = "train", layout: str = "image", dtype=jnp.float32
) -> Dataset:
    """CIFAR-10 from the python-pickle batches in folder ``path`` (nothing is downloaded).

    ``path`` is the ``cifar-10-batches-py`` folder of the official archive or its parent. Split
    ``"train"`` concatenates ``data_batch_1`` … ``data_batch_5`` (50,000 images), ``"test"`` is
    ``test_batch`` (10,000). Each batch is a dict with ``b"data"``, uint8 ``(N, 3072)`` with
    each row the 1024 red, 1024 green, then 1024 blue pixels of a 32×32 image in row-major
    order, and ``b"labels"``, N ints in [0, 10).

    Security: unpickling runs code. CIFAR-10 is distributed as pickles; load only files you
    trust (the official archive).

    Args:
      path: the folder.
      split: ``"train"`` or ``"test"``.
      layout: ``"image"`` → ``(N, 32, 32, 3)`` (NHWC); ``"flat"`` → ``(N, 3072)`` (NHWC order);
        ``"sequence"`` → ``(N, 32, 96)`` (32 rows of 32 RGB pixels).
      dtype: a float dtype scales the pixels to [0, 1]; ``uint8`` keeps the raw bytes.

    Returns:
      ``Dataset(x, y)`` with int32 labels ``y`` of shape ``(N,)``.

    >>> test = load_cifar10("~/data/cifar-10-batches-py", split="test")  # doctest: +SKIP
    >>> test.x.shape  # doctest: +SKIP
    (10000, 32, 32, 3)
    """
    fn = "load_cifar10"
    check_choice(fn, "split", split, ("train", "test"))
    check_choice(fn, "layout", layout, _LAYOUTS)
    _check_pixel_dtype(fn, dtype)
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    expected = f"the CIFAR-10 python batches {', '.join(train_names)}, test_batch"
    folder = _folder(fn, path, expected)
    names = train_names if split == "train" else ["test_batch"]
    sub = folder / "cifar-10-batches-py"
    if sub.is_dir() and not any((folder / n).exists() for n in names):
        folder = sub
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{fn}: {', '.join(missing)} missing from {folder}; expected {expected} in the "
            "folder or in its cifar-10-batches-py subfolder."
        )
    images, labels = zip(*(_read_cifar_batch(fn, folder / n) for n in names), strict=True)
    images = _layout(np.concatenate(images), layout)
    labels = np.concatenate(labels).astype(np.int32)
    return Dataset(_pixels(images, dtype, 255), jnp.asarray(labels))


# --------------------------------------------------------------------------- helpers


def _check_pixel_dtype(fn: str, dtype: Any) -> None:
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.dtype(dtype) == jnp.uint8):
        raise TypeError(
            f"{fn}: `dtype` must be a floating-point dtype (pixels scaled to [0, 1]) or uint8 "
            f"(raw pixels), got {dtype!r}."
        )


def _layout(images: np.ndarray, layout: str) -> np.ndarray:
    """``(N, H, W, C)`` images to the requested layout."""
    n, h, w, c = images.shape
    return {
        "image": images,
        "flat": images.reshape(n, -1),
        "sequence": images.reshape(n, h, w * c),
    }[layout]


def _pixels(raw: np.ndarray, dtype: Any, max_value: int) -> jax.Array:
    if jnp.dtype(dtype) == jnp.uint8:
        return jnp.asarray(raw.astype(np.uint8))
    work = np.float64 if jnp.dtype(dtype).itemsize > 4 else np.float32
    return jnp.asarray((np.asarray(raw, work) / work(max_value)).astype(jnp.dtype(dtype)))


def _folder(fn: str, path: Any, expected: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"{fn}: {folder} {state}; expected a folder with {expected}.")
    return folder


def _check_labels(fn: str, labels: np.ndarray, path: Path, num_classes: int = 10) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"{fn}: label {labels[bad[0]]} out of range [0, {num_classes}) at index {bad[0]} "
            f"in {path}."
        )


def _read_idx(fn: str, path: Path, magic: int | None = None, what: str = "") -> np.ndarray:
    """Parse one IDX file; with ``magic``, insist on it (``what`` names the content)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{fn}: cannot read {path}: {err} (truncated or not gzip?).") from err
    got = int.from_bytes(raw[:4], "big")
    ok = len(raw) >= 4 and raw[0] == raw[1] == 0 and raw[2] in _IDX_TYPES
    if not ok or (magic is not None and got != magic):
        want = f"0x{magic:08X} (IDX ubyte {what})" if magic is not None else "an IDX magic number"
        shown = f"0x{got:08X}" if len(raw) >= 4 else f"(only {len(raw)} bytes)"
        raise ValueError(f"{fn}: wrong magic {shown} in {path}: expected {want}.")
    ndim, dtype = raw[3], np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{fn}: truncated: {path} ends inside its {ndim}-dimension header.")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    want, have = int(np.prod(shape)) * dtype.itemsize, len(raw) - 4 - 4 * ndim
    if have != want:
        if what == "images" and ndim == 3:
            desc = f"{shape[0]} images of {shape[1]}×{shape[2]}"
        else:
            desc = f"{shape[0]} {what}" if what and ndim == 1 else f"shape {shape} of {dtype}"
        state = "truncated: " if have < want else "wrong size (trailing bytes): "
        raise ValueError(f"{fn}: {state}{path} declares {desc} = {want} bytes but has {have}.")
    return (
        np.frombuffer(raw, dtype, offset=4 + 4 * ndim)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _read_cifar_batch(fn: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 pickle batch as NHWC uint8 images and int labels."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # a truncated pickle raises EOFError, UnpicklingError, ValueError...
        raise ValueError(
            f"{fn}: cannot unpickle {path} ({type(err).__name__}: {err}); the file is truncated "
            "or not a CIFAR-10 python batch."
        ) from err
    batch = batch if isinstance(batch, dict) else {}
    data, labels = (batch.get(k, batch.get(k.decode())) for k in (b"data", b"labels"))
    if data is None or labels is None:
        raise ValueError(
            f"{fn}: {path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels', "
            f"got keys {sorted(map(str, batch))}."
        )
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"{fn}: b'data' in {path} is {data.dtype} of shape {data.shape}; expected uint8 of "
            "shape (N, 3072) (three 32×32 channel planes per row)."
        )
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(
            f"{fn}: {path} has {len(data)} images but b'labels' of shape {labels.shape} "
            f"({labels.dtype}); expected {len(data)} integer labels."
        )
    _check_labels(fn, labels, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
