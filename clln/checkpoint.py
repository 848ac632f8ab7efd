"""Checkpoint files of ``clln train`` and ``clln run``: written atomically, checked on load.

A checkpoint is one JSON object (``docs/config.md``, "Checkpoints and resuming"):
``format`` (:data:`FORMAT`), ``version``, ``kind`` (``"train"`` or ``"run"``), ``config``
(its name), ``config_digest`` (:func:`config_digest`), ``epoch`` (epochs trained), the
kind's own fields, and ``digest``, the SHA-256 of all the others, which a damaged file
fails. Arrays that must come back bit for bit (float state) are stored by
:func:`encode_array` as their bytes.
"""

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError

FORMAT = "clln-checkpoint"
VERSION = 1

#: Config fields a checkpoint does not depend on: names and paths, the run's length and
#: seed (a checkpoint names its own seeds), and the gateware's fold (every fold computes
#: the same bits; a board's number of streams is checked on its own).
_NOT_HASHED = {"name", "source", "fabric", "has_fabric"}
_NOT_HASHED_IN = {"learning": {"epochs", "seed"}, "task": {"dataset"}}


def config_digest(cfg):
    """Hex SHA-256 (16 digits) of every config value a training run depends on.

    That is every key of the config but ``name``, ``learning.epochs``,
    ``learning.seed`` and ``[fabric]``, with the dataset by its values rather than its
    path. A checkpoint resumes only under a config of the same digest.
    """
    doc = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_HASHED}
    for section, keys in _NOT_HASHED_IN.items():
        doc[section] = {k: v for k, v in doc[section].items() if k not in keys}
    text = json.dumps(_plain(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value):
    """``value`` with arrays, tuples and NumPy scalars as JSON's lists and numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_array(array):
    """An array as JSON: ``dtype``, ``shape`` and its bytes (little-endian, base64)."""
    a = np.asarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.str, "shape": list(a.shape),
            "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}


def decode_array(doc, source, key):
    """The array :func:`encode_array` stored; a malformed entry is a ConfigError."""
    try:
        dtype, shape = np.dtype(doc["dtype"]), tuple(int(n) for n in doc["shape"])
        if dtype.kind not in "biuf":
            raise ValueError(f"dtype {dtype}")
        data = base64.b64decode(doc["data"], validate=True)
        return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(source, key, f"not an encoded array ({e})") from None


def _digest(doc):
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def save(path, doc):
    """Write ``doc`` (with :data:`FORMAT`, :data:`VERSION` and its digest added) to
    ``path`` atomically: into a temporary file of the same folder, flushed to disk,
    then renamed over ``path``. A write that fails leaves the old file as it was.

    Raises
    ------
    OSError
        The file could not be written (the temporary file is removed).
    """
    path = Path(path)
    doc = {"format": FORMAT, "version": VERSION, **doc}
    text = json.dumps({**doc, "digest": _digest(doc)}, separators=(",", ":")) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):       # the rename itself, on disk
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load(path, kind, cfg):
    """Read a checkpoint of ``kind`` for ``cfg``.

    Raises
    ------
    ConfigError
        Naming ``path``: it cannot be read, is not a checkpoint, is damaged or cut short
        (its digest), is of the other kind, or belongs to another config (its
        :func:`config_digest`).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"cannot read the checkpoint: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError(path, "", "not a checkpoint, or one cut short (not a complete "
                          "JSON object)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(path, "", f"not a clln checkpoint (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ConfigError(path, "version", f"checkpoint version {doc.get('version')!r}; "
                          f"this clln reads version {VERSION}")
    digest = doc.pop("digest", None)
    if digest != _digest(doc):
        raise ConfigError(path, "", "damaged checkpoint: its contents do not match its "
                          "digest")
    if doc.get("kind") != kind:
        other = {"train": "clln train", "run": "clln run"}.get(doc.get("kind"), "?")
        raise ConfigError(path, "kind", f"a checkpoint of {other}: resume it with {other}")
    want = config_digest(cfg)
    if doc.get("config_digest") != want:
        raise ConfigError(path, "config_digest", f"checkpoint of another config "
                          f"({doc.get('config')}, hash {doc.get('config_digest')}; "
                          f"{cfg.name} has {want})")
    return doc


def field(doc, path, key, kind, check=None):
    """``doc[key]`` of Python type ``kind`` (and passing ``check``, if given); otherwise
    a ConfigError naming the checkpoint and the key (a file with a valid digest but bad
    fields was made by hand)."""
    value = doc.get(key)
    if (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool
            or check is not None and not check(value)):
        raise ConfigError(path, key, f"missing or invalid in the checkpoint: {value!r}")
    return value
