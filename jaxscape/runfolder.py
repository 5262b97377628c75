"""A run folder whose stages resume: finished stages load, interrupted ones restart cleanly.

Layout of a folder::

    run.json                  format version, jaxscape version, command, creation time
    stages/<name>/record.json the stage's key, results (JSON) and timing — written last
    stages/<name>/arrays-<key>.npz   its arrays
    stages/<name>/work-<key>/ scratch space while it runs (e.g. ``fit`` checkpoints)

A stage's key hashes its name, its options and the keys of the stages it depends on, so a
changed option recomputes that stage and everything downstream of it, and nothing else.
``record.json`` is replaced atomically after the arrays are on disk: a stage killed at any
moment has either its old complete record or none, never a half-written one, and its scratch
folder lets it resume work in progress (a training run picks up from its last checkpoint).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 1  # bump when the layout or a stage's meaning changes incompatibly


class StageRecord(NamedTuple):
    """A finished stage.

    Attributes:
      name: the stage's name.
      key: hash of name, options and upstream keys.
      results: JSON-able dict (numbers, strings, lists).
      arrays: ``{name: np.ndarray}``.
      seconds: wall time of the run that computed it.
      cached: True when loaded from the folder rather than computed now.
    """

    name: str
    key: str
    results: dict
    arrays: dict
    seconds: float
    cached: bool


class RunFolder:
    """A folder of resumable stages; see the module docstring.

    Args:
      path: the folder (created). An existing folder must be an empty one or a run folder of
        this format; anything else is refused, never overwritten.
      command: the command line to record in ``run.json``.
    """

    def __init__(self, path: str | Path, *, command: Sequence[str] | None = None):
        from jaxscape import __version__

        self.path = Path(path)
        meta_path = self.path / "run.json"
        if meta_path.exists():
            meta = _read_json(meta_path)
            if meta.get("format") != FORMAT:
                raise ValueError(
                    f"{self.path} holds a run of format {meta.get('format')!r} (jaxscape "
                    f"{meta.get('jaxscape', '?')}); this jaxscape ({__version__}) writes format "
                    f"{FORMAT}. Use another output folder, or delete this one to start over."
                )
        elif self.path.exists() and any(self.path.iterdir()):
            raise ValueError(
                f"{self.path} exists, is not empty and is not a jaxscape run folder (no "
                "run.json); refusing to write into it. Choose another output folder."
            )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            meta = {
                "format": FORMAT,
                "jaxscape": __version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        meta["command"] = list(command) if command is not None else meta.get("command")
        _write_json(meta_path, meta)
        self.meta = meta

    def stage_key(self, name: str, options: Mapping[str, Any], depends: Sequence[StageRecord] = ()):
        """The key of stage ``name`` with ``options`` downstream of ``depends``."""
        blob = json.dumps(
            {
                "name": name,
                "options": _jsonable(dict(options)),
                "depends": [d.key for d in depends],
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def workdir(self, name: str, key: str) -> Path:
        """Scratch folder of a stage run (kept until the stage is recorded)."""
        path = self._dir(name) / f"work-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load(self, name: str, key: str) -> StageRecord | None:
        """The recorded stage if its key is ``key``, else ``None``."""
        record_path = self._dir(name) / "record.json"
        if not record_path.exists():
            return None
        record = _read_json(record_path)
        if record.get("key") != key:
            return None
        with np.load(self._dir(name) / record["arrays"]) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return StageRecord(name, key, record["results"], arrays, record["seconds"], True)

    def save(self, name: str, key: str, results: Mapping, arrays: Mapping, seconds: float):
        """Record a finished stage: arrays first, then ``record.json`` atomically."""
        folder = self._dir(name)
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        npz = f"arrays-{key}.npz"
        tmp = folder / f".{npz}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, folder / npz)
        results = _jsonable(dict(results))
        record = {"key": key, "results": results, "arrays": npz, "seconds": seconds}
        _write_json(folder / "record.json", record)
        for stale in folder.iterdir():  # older runs of this stage, and the finished scratch
            if stale.name not in (npz, "record.json"):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        return StageRecord(name, key, results, arrays, seconds, False)

    def run(
        self,
        name: str,
        options: Mapping[str, Any],
        compute: Callable[[Path], tuple[Mapping, Mapping]],
        depends: Sequence[StageRecord] = (),
    ) -> StageRecord:
        """Load stage ``name`` if recorded with these options and upstream stages, else run
        ``compute(workdir) -> (results, arrays)`` and record it."""
        import time

        key = self.stage_key(name, options, depends)
        found = self.load(name, key)
        if found is not None:
            return found
        start = time.perf_counter()
        results, arrays = compute(self.workdir(name, key))
        return self.save(name, key, results, arrays, time.perf_counter() - start)

    def records(self) -> dict[str, dict]:
        """``{stage: record.json contents}`` of every recorded stage."""
        out = {}
        for path in sorted((self.path / "stages").glob("*/record.json")):
            out[path.parent.name] = _read_json(path)
        return out

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"RunFolder: invalid stage name {name!r}.")
        folder = self.path / "stages" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def save_params(path: str | Path, params: Any) -> None:
    """Write ``params`` to ``path`` (``.npz``, one array per leaf, keyed by its tree path)."""
    path = Path(path)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    arrays = {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def load_params(path: str | Path, like: Any) -> Any:
    """Params from a ``save_params`` file (e.g. a report's ``params-adam.npz``), checked against
    ``like`` (the problem's params): the same leaf paths and shapes, cast to its dtypes.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file and the mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} does not exist.")
    try:
        with np.load(path) as npz:
            saved = {k: npz[k] for k in npz.files}
    except Exception as err:
        raise ValueError(f"params file {path} is not a readable .npz file ({err}).") from None
    leaves = jax.tree_util.tree_leaves_with_path(like)
    names = [jax.tree_util.keystr(k) for k, _ in leaves]
    missing = [n for n in names if n not in saved]
    extra = [n for n in saved if n not in names]
    if missing or extra:
        raise ValueError(
            f"params file {path} does not match the problem's params: missing "
            f"{missing[:5] or 'none'}, unexpected {extra[:5] or 'none'}."
        )
    out = []
    for name, (_, ref) in zip(names, leaves, strict=True):
        if saved[name].shape != np.shape(ref):
            raise ValueError(
                f"params file {path}: {name} has shape {saved[name].shape}, the problem's "
                f"params {np.shape(ref)}."
            )
        out.append(jnp.asarray(saved[name], jnp.asarray(ref).dtype))
    return jax.tree.unflatten(jax.tree.structure(like), out)


def device_info() -> dict:
    """The devices JAX uses: platform, kind, count and a one-line summary."""
    devices = jax.devices()
    d = devices[0]
    kind = getattr(d, "device_kind", "") or d.platform
    return {
        "platform": d.platform,
        "kind": kind,
        "count": len(devices),
        "summary": f"{len(devices)}× {d.platform} ({kind})",
    }


def versions() -> dict:
    """Versions of jaxscape, JAX, Flax, Optax, NumPy and Python (recorded with results)."""
    import flax
    import optax

    import jaxscape

    return {
        "jaxscape": jaxscape.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: NumPy/JAX scalars and arrays become numbers and lists; NaN and ±inf
    become the strings "NaN", "Infinity", "-Infinity" (strict JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if hasattr(value, "shape") and np.ndim(value) > 0:
        return [_jsonable(v) for v in np.asarray(value).tolist()]
    if isinstance(value, int | np.integer) or (
        hasattr(value, "dtype") and np.issubdtype(np.asarray(value).dtype, np.integer)
    ):
        return int(value)
    if isinstance(value, float | np.floating) or hasattr(value, "dtype"):
        x = float(value)
        if math.isnan(x):
            return "NaN"
        return x if math.isfinite(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"RunFolder: cannot store {type(value).__name__} {value!r} as JSON.")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is unreadable or not JSON ({err}); delete it to recompute."
        ) from None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    os.replace(tmp, path)


__all__ = [
    "FORMAT",
    "RunFolder",
    "StageRecord",
    "device_info",
    "load_params",
    "save_params",
    "versions",
]
