"""Build the course website: ``make site`` runs this.

1. site/prepare.py assembles build/site-src/ (the notebooks as committed, never executed, with their solutions
   in toggles and a references box; site/*.md; TEACHING.md when it exists; slides and the student download when
   ``make slides`` / ``make student`` have run);
2. Sphinx (myst-nb, sphinx-book-theme) builds build/site/, warnings as errors;
3. site/check_site.py checks every internal link and image, and that nothing loads from another host.

    python site/build.py [--out build/site] [--require-alt]
"""
from __future__ import annotations

import argparse
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
    ap.add_argument("--require-alt", action="store_true", help="fail on images without alt text")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    src = ROOT / "build" / "site-src"
    summary = prepare.prepare(src, conf.REFERENCES, ROOT / "build" / "slides", ROOT / "build" / "student")
    n_sol = sum(len(v) for v in summary["solutions"].values())
    print(f"prepare: {n_sol} solutions put under their exercises, {summary['widgets']} widget views made static, "
          f"{len(summary['slides'])} slide decks, student download: {'yes' if summary['student'] else 'no'}, "
          f"teacher's guide: {'yes' if summary['teaching'] else 'no (TEACHING.md not written yet)'}")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(HERE),
           str(src), args.out]
    if summary["student"]:
        cmd += ["-t", "student"]
    rc = subprocess.call(cmd)
    if rc:
        return rc
    rc = check_site.main([args.out] + (["--require-alt"] if args.require_alt else []))
    print(f"site: {args.out} in {time.perf_counter() - t0:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
