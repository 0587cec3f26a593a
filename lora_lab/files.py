"""File helpers shared by downloads, adapters and caches: checksums and all-or-nothing writes."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["sha256_of", "atomic_write", "copy_if_missing", "copy_verified"]


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place in one step,
    so a crash or an error never leaves a half-written ``path``.

    The temporary file has a random name (``.<name>.<random>.tmp``), so one left behind by a killed
    process never gets in the way of a later write. Its bytes are flushed to disk (``fsync``) before the
    move: a later step that relies on this file being complete (an adapter's config, written after its
    weights) can then never be on disk before it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def copy_if_missing(src, dst) -> None:
    if not Path(dst).exists():
        atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def copy_verified(src, dst, sha256: str) -> str:
    """Make ``dst`` hold exactly the bytes whose sha256 is ``sha256``, copied from ``src``.

    A ``dst`` that already has the right checksum is kept; anything else there (a truncated download, a
    corrupt or foreign file) is replaced. The copy is checked *before* it replaces ``dst``, so a bad
    ``src`` never overwrites anything. Returns what happened: ``"kept"``, ``"copied"`` or ``"replaced"``.
    Raises ``ValueError`` when ``src`` does not have the checksum.
    """
    dst = Path(dst)
    if dst.is_file() and sha256_of(dst) == sha256:
        return "kept"
    existed = dst.exists()

    def write(tmp):
        shutil.copyfile(src, tmp)
        actual = sha256_of(tmp)
        if actual != sha256:
            raise ValueError(f"{src} has sha256 {actual}, expected {sha256}; {dst} was left as it was")

    atomic_write(dst, write)
    return "replaced" if existed else "copied"
