"""Build the course website: ``make site`` runs this.

1. site/prepare.py assembles build/site-src/ (the notebooks as committed, never executed, with their solutions
   in toggles and a references box; site/*.md; TEACHING.md when it exists; slides and the student download when
   ``make slides`` / ``make student`` have run);
2. Sphinx (myst-nb, sphinx-book-theme) builds build/site/, warnings as errors;
3. site/check_site.py checks every internal link and image, that nothing loads from another host, and that every
   image has alt text (the notebooks' figure cells carry it as {"mystnb": {"image": {"alt": ...}}}).

    python site/build.py [--out build/site] [--allow-missing-alt]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import check_site  # noqa: E402
import conf  # noqa: E402
import prepare  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "site"))
    ap.add_argument("--slides", default=str(ROOT / "build" / "slides"),
                    help="where make slides wrote the decks ('' to leave them out)")
    ap.add_argument("--allow-missing-alt", action="store_true", help="count images without alt text, do not fail")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    src = ROOT / "build" / "site-src"
    slides = Path(args.slides) if args.slides else None
    summary = prepare.prepare(src, conf.REFERENCES, slides, ROOT / "build" / "student", conf.LESSON_REFERENCES)
    n_sol = sum(len(v) for v in summary["solutions"].values())
    print(f"prepare: {n_sol} solutions put under their exercises, {summary['widgets']} widget views made static, "
          f"{len(summary['slides'])} slide decks, student download: {'yes' if summary['student'] else 'no'}, "
          f"teacher's guide: {'yes' if summary['teaching'] else 'no (TEACHING.md not written yet)'}")
    for extra in ("slides", "downloads"):  # html_extra_path's files are copied anew each build: drop stale ones
        shutil.rmtree(Path(args.out) / extra, ignore_errors=True)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(HERE),
           str(src), args.out]
    if summary["student"]:
        cmd += ["-t", "student"]
    rc = subprocess.call(cmd)
    if rc:
        return rc
    rc = check_site.main([args.out] + ([] if args.allow_missing_alt else ["--require-alt"]))
    print(f"site: {args.out} in {time.perf_counter() - t0:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
