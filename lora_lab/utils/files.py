"""File helpers shared by downloads, adapters, caches and model weights: checksums and all-or-nothing writes.

Every sha256 check in the package goes through :func:`verify_sha256`, so a file with the wrong bytes is
always the same error, :class:`DataIntegrityError`, whose message names the file, both checksums and the fix.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["DataIntegrityError", "sha256_of", "verify_sha256", "atomic_write", "write_json", "permissions",
           "check_regular_file", "read_text_file", "read_json_file", "folder_problem", "copy_verified", "swap_folder"]


class DataIntegrityError(RuntimeError, ValueError):
    """A file does not have the checksum it must have (a truncated download, a corrupt cache, a foreign file).

    It is both a ``RuntimeError`` (what the data checks raised) and a ``ValueError`` (what the weights and copy
    checks raised), so code written against either keeps catching it. Also importable as
    ``lora_lab.data.DataIntegrityError``.
    """


def sha256_of(path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (read in 1 MiB chunks, so large weights fit in memory)."""
    h = hashlib.sha256()
    with open(check_regular_file(path), "rb") as f:  # a FIFO would block here forever
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path, expected: str, *, what: str = "file", fix: str = "") -> str:
    """Check that the file at ``path`` has the sha256 ``expected``; return it.

    A checksum is the only way to know that bytes on disk are the bytes a result was made with: a download
    cut short or a cache edited by hand otherwise loads "fine" and gives quietly different numbers. On a
    mismatch raises :class:`DataIntegrityError` naming ``what`` the file is, the file, both checksums and
    ``fix`` (what to do about it; default: delete it and run again).
    """
    actual = sha256_of(path)
    if actual != expected:
        raise DataIntegrityError(f"{what} {path} is corrupt or not the expected file: sha256 {actual}, expected "
                                 f"{expected}. {fix or 'Delete it and run again to get a fresh copy.'}")
    return actual


def permissions(full: int = 0o666) -> int:
    """``full`` less the process's umask: the mode ``open()`` would give a new file (``0o777`` for a folder).
    Temporary files and folders are private (0600/0700); what they become must not be."""
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return full & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, and put it back at once
    os.umask(mask)
    return full & ~mask


def check_regular_file(path, limit: int | None = None) -> Path:
    """``path`` if it is a regular file (of at most ``limit`` bytes); else ``ValueError`` naming it. Checked
    before anything opens it: a FIFO would block a reader forever, and a link to ``/dev/zero`` never ends."""
    path = Path(path)
    st = os.stat(path)  # follows links: a link to a device is a device
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} is a folder, not a file; replace it with the file it should be (or point at "
                         "another path)")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file (a FIFO, a device or a socket?); replace it with the file "
                         "it should be")
    if limit is not None and st.st_size > limit:
        raise ValueError(f"{path} is {st.st_size:,} bytes, more than the {limit:,} such a file can be; it is not "
                         "the file it should be")
    return path


def read_text_file(path, limit: int = 1 << 20) -> str:
    """A small text file (a config: 1 MiB at most), checked by :func:`check_regular_file` first."""
    return check_regular_file(path, limit).read_text(encoding="utf-8")


def read_json_file(path, limit: int | None = 1 << 20, *, fix: str = "", expect: type | None = None) -> object:
    """The JSON value in a UTF-8 file (checked by :func:`check_regular_file` first). A file that is not UTF-8
    (UTF-16, say) or not valid JSON (cut short, edited, empty) is a ``ValueError`` naming it, what is wrong and
    ``fix``; "is not valid JSON" is in every such message. ``expect=dict`` (the one home of this check) also
    refuses valid JSON of another kind: "should hold a JSON object, got [1, 2]"."""
    path = Path(path)
    data = check_regular_file(path, limit).read_bytes()
    fix = f" {fix}" if fix else ""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(f"{path} is not valid JSON: it is UTF-16 text, and these files must be UTF-8; save "
                         f"it as UTF-8.{fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: it is not UTF-8 text ({e}).{fix}") from None
    if not text.strip():
        raise ValueError(f"{path} is not valid JSON: the file is empty (a write that was cut short?).{fix}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): it was cut short or edited.{fix}") from None
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "a JSON object", list: "a JSON array"}.get(expect, expect.__name__)
        raise ValueError(f"{path} should hold {kind}, got {json.dumps(value)[:60]}.{fix}")
    return value


def folder_problem(path, *, writable: bool = True) -> str | None:
    """Why ``path`` can be neither used nor created as a folder (a file is there, or a file is where one of its
    parents would be, or, with ``writable``, its nearest existing parent is not writable), or None when it can.
    Nothing is created."""
    path = Path(path)
    if path.is_dir():
        return None
    if path.exists() or path.is_symlink():
        return f"{path} is a file, not a folder"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{parent} is a file, so no folder can be made under it"
    if writable and parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist, and {parent} is not writable to create it in"
    return None


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
        os.chmod(tmp, permissions())  # mkstemp made it private; the file it becomes follows the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def swap_folder(new, path) -> None:
    """Put the folder ``new`` where the folder ``path`` is, in two renames: the old one is moved aside and deleted
    only after, so a crash leaves the old folder or the new one. ``OSError`` with ``path`` as it was when it
    cannot be moved (a mount point, a parent you may not write in)."""
    new, path = Path(new), Path(path)
    old = new.with_name(new.name + ".old")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json(path, obj, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, a newline at the end) with :func:`atomic_write`: results files, metrics
    and configs are rewritten as a run goes on, and a reader must never find half a file."""
    text = json.dumps(obj, indent=indent) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def copy_verified(src, dst, sha256: str) -> str:
    """Make ``dst`` hold exactly the bytes whose sha256 is ``sha256``, copied from ``src``.

    A ``dst`` that already has the right checksum is kept; anything else there (a truncated download, a
    corrupt or foreign file) is replaced. The copy is checked *before* it replaces ``dst``, so a bad
    ``src`` never overwrites anything. Returns what happened: ``"kept"``, ``"copied"`` or ``"replaced"``.
    Raises :class:`DataIntegrityError` when ``src`` does not have the checksum.
    """
    dst = Path(dst)
    if dst.is_file() and sha256_of(dst) == sha256:
        return "kept"
    existed = dst.exists()

    def write(tmp):
        shutil.copyfile(src, tmp)
        verify_sha256(tmp, sha256, what=f"the bytes copied from {src} into",
                      fix=f"{dst} was left as it was; check or replace {src}.")

    atomic_write(dst, write)
    return "replaced" if existed else "copied"
