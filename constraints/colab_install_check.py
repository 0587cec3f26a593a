"""Install the course the way its Colab cells do and check that no preinstalled package changes.

Run with the Python of an environment built from constraints/colab.txt (``make test-colab`` does):

    .venv-colab/bin/python constraints/colab_install_check.py baseline   # once, right after building it
    .venv-colab/bin/python constraints/colab_install_check.py install    # every run

``baseline`` records ``pip freeze`` (Colab's preinstalled set, as built here). ``install`` removes any earlier
lora-lab, then runs the two install lines of the notebooks' Colab cells, from this checkout instead of GitHub
(no network here): ``pip install -q "lora-lab @ <repo>"`` (notebooks 1, 2, 4-10) and
``pip install -q "lora-lab[offline] @ <repo>"`` (notebook 3). Then it compares ``pip freeze`` with the baseline:
every baseline package must still be there at the same version; new packages are listed (they are what the
course adds to Colab), and a new package that Colab's full list (colab-pip-freeze.gpu.txt) has at another version
counts as a change too (on Colab it would be an upgrade). Exit status 1 if anything preinstalled changed.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = Path(sys.prefix) / "colab-baseline.txt"
COLAB_FREEZE = Path(__file__).with_name("colab-pip-freeze.gpu.txt")  # googlecolab/backend-info, verbatim


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_versions() -> dict[str, str]:
    return {norm(line.split("==", 1)[0]): line.split("==", 1)[1].strip()
            for line in COLAB_FREEZE.read_text().splitlines() if "==" in line and not line.startswith("#")}


def freeze() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                         text=True).stdout
    pkgs = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
        elif " @ " in line:
            name, version = line.split(" @ ", 1)
        else:
            continue
        pkgs[norm(name)] = version.strip()
    return pkgs


def pip(*args: str) -> None:
    print("$ pip", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def main(mode: str) -> int:
    if mode == "baseline":
        pkgs = freeze()
        BASELINE.write_text("".join(f"{k}=={v}\n" for k, v in sorted(pkgs.items())))
        print(f"baseline: {len(pkgs)} packages -> {BASELINE}")
        return 0
    base = dict(line.strip().split("==", 1) for line in BASELINE.read_text().splitlines() if "==" in line)
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "lora-lab"], capture_output=True)
    url = ROOT.as_uri()
    pip("install", "-q", f"lora-lab @ {url}")  # the Colab cell of notebooks 1, 2 and 4-10
    pip("install", "-q", f"lora-lab[offline] @ {url}")  # notebook 3's Colab cell
    after = freeze()
    changed = {k: (v, after.get(k)) for k, v in base.items() if after.get(k) != v}
    print(f"preinstalled packages: {len(base)}; unchanged: {len(base) - len(changed)}")
    added = {k: v for k, v in after.items() if k not in base}
    colab = colab_versions()
    changed.update({k: (colab[k], v) for k, v in added.items() if k in colab and colab[k] != v})
    print("added by the course:", ", ".join(f"{k}=={v}" if "==" not in v else k for k, v in sorted(added.items()))
          or "nothing")
    if changed:
        for k, (old, new) in sorted(changed.items()):
            print(f"CHANGED  {k}: {old} -> {new or 'removed'}")
        return 1
    print("OK: installing lora-lab as the Colab cells do changes no preinstalled package")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "install"))
