"""Pre-seed the caches the course fills from the internet, from a local folder (CI, offline classrooms).

    python -m lora_lab.cache seed ../shared/data

copies, after checking each file's sha256 (a file already in place is checked too: one with the right
checksum is kept, a corrupt one is replaced from the verified source):
* ``sms_spam_collection/SMSSpamCollection`` -> the data folder (:func:`lora_lab.data.default_data_dir`)
* ``gpt2_tokenizer/{vocab.bpe,encoder.json}`` -> tiktoken's cache, under the names tiktoken looks for
  (the sha1 of the download URL), so ``tiktoken.get_encoding("gpt2")`` works offline.

The project itself always downloads from the real sources when nothing is cached.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

from .data.sms import SMS_FILE, SMS_SHA256, default_data_dir
from .utils.files import DataIntegrityError, copy_verified, verify_sha256

TIKTOKEN_FILES = {  # file: (URL tiktoken downloads it from, sha256 tiktoken checks)
    "vocab.bpe": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                  "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    "encoder.json": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
                     "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
}


def tiktoken_cache_dir() -> Path:
    """Where tiktoken caches downloads (same rule as tiktoken.load.read_file_cached)."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    if os.environ.get("DATA_GYM_CACHE_DIR"):
        return Path(os.environ["DATA_GYM_CACHE_DIR"])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _install(src: Path, dst: Path, sha: str) -> str:
    """Check the source first (a corrupt source must not even start a copy), then copy it, verified again."""
    verify_sha256(src, sha, what="the source file", fix="Refused: not copying it; replace it with a verified copy.")
    return copy_verified(src, dst, sha)


def seed(source, data_dir=None, log=None) -> list[Path]:
    """Copy the verified files found in ``source`` into the caches; returns the cache paths now verified.

    Every file that ends up in a cache has the expected sha256: a source file with another checksum is an
    error (nothing is copied), and a file already in the cache is checked as well and replaced when it is
    corrupt (a half-finished copy, a file edited by hand), not kept. ``log`` (e.g. ``print``) is told what
    happened to each file: kept (already right), copied, or replaced.
    """
    source = Path(source)
    pairs = []
    sms = source / "sms_spam_collection" / SMS_FILE
    if sms.is_file():
        pairs.append((sms, Path(data_dir or default_data_dir()) / SMS_FILE, SMS_SHA256))
    for name, (url, sha) in TIKTOKEN_FILES.items():
        src = source / "gpt2_tokenizer" / name
        if src.is_file():
            pairs.append((src, tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest(), sha))
    written = []
    for src, dst, sha in pairs:
        what = _install(src, dst, sha)
        if log:
            log({"kept": f"verified {dst} (already there, sha256 right)", "copied": f"seeded {dst}",
                 "replaced": f"replaced {dst}: the copy there was corrupt (wrong sha256)"}[what])
        written.append(dst)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lora_lab.cache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["seed"])
    ap.add_argument("source", help="folder with sms_spam_collection/ and gpt2_tokenizer/")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    try:
        seed(args.source, args.data_dir, log=print)
    except DataIntegrityError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
