"""The course's main path without the internet: notebooks 3-8 in the ``real`` profile, quick mode, against the
stand-in hub (issue 25 §2). ``make test-real-quick`` runs it; CI runs it after ``make test``.

The real profile loads GPT-2 124M from the Hugging Face hub. Here the hub is ``tests/hubserver.py`` on 127.0.0.1,
serving a 124M-shaped GPT-2 with RANDOM weights written by transformers' ``save_pretrained`` as
``openai-community/gpt2``: everything on the client's side is the real code (``huggingface_hub`` over HTTP, its
cache, lora_lab's checksums, the notebooks' real-profile branches). ``LORA_LAB_QUICK=1`` trains each fine-tune
on a small subset for one epoch, so the five notebooks run in minutes on 2 CPU cores. The weights are random:
every accuracy these runs print means nothing, which the banner below and the notebooks' quick banner say.

    python tests/real_quick.py [notebook-number ...]     (default: 03 04 05 06 07 08)

Each notebook is executed with nbclient (nothing is saved); a cell that raises fails the run, naming the notebook
and the cell. The time of each notebook is printed, for the CI log.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent / "notebooks"
REPO = "openai-community/gpt2"
COMMIT = "5e7a1d2c3b4a59687766554433221100ffeeddcc"  # the stand-in's one commit, as in tests/test_hub.py
DEFAULT = ("03", "04", "05", "06", "07", "08")
BANNER = """\
############################################################################
#  REAL PROFILE, QUICK MODE, STAND-IN HUB: GPT-2 124M's shapes with RANDOM #
#  weights, served from 127.0.0.1. It checks that the course's main path   #
#  runs end to end. Its accuracies and losses MEAN NOTHING.                #
############################################################################"""


def serve_random_gpt2(folder: Path):
    """Write a 124M-shaped GPT-2 with random weights (seeded) the way the hub holds it, and a stand-in hub for it
    (not started)."""
    import torch
    import transformers

    sys.path.insert(0, str(HERE))
    from hubserver import StandInHub

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(folder, safe_serialization=True)
    return StandInHub({REPO: (folder, COMMIT)})


def slowest(nb, n: int = 3) -> str:
    """The ``n`` slowest cells of an executed notebook, from the timings nbclient records."""
    from datetime import datetime

    times = []
    for i, c in enumerate(nb.cells):
        ex = c.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
            start, end = (datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            times.append(((end - start).total_seconds(), i))
    return ", ".join(f"cell {i} {s:.0f} s" for s, i in sorted(times, reverse=True)[:n])


def run(numbers=DEFAULT) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    print(BANNER, flush=True)
    work = Path(tempfile.mkdtemp(prefix="lora-lab-real-quick-"))
    failed = []
    try:
        t0 = time.perf_counter()
        hub = serve_random_gpt2(work / "gpt2")
        print(f"stand-in hub: {REPO} at commit {COMMIT[:12]}, written in {time.perf_counter() - t0:.0f} s", flush=True)
        env = {"LORA_LAB_PROFILE": "real", "LORA_LAB_QUICK": "1", "LORA_LAB_PROGRESS": "0", "MPLBACKEND": "Agg",
               "HF_HUB_CACHE": str(work / "hf-cache"), "HF_HUB_DISABLE_TELEMETRY": "1",
               "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
        with hub:
            env["HF_ENDPOINT"] = hub.url
            saved = dict(os.environ)
            os.environ.update(env)  # the kernels inherit them: huggingface_hub reads HF_ENDPOINT at import
            try:
                for number in numbers:
                    path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
                    nb = nbformat.read(path, as_version=4)
                    t = time.perf_counter()
                    try:
                        NotebookClient(nb, timeout=600, kernel_name="python3",
                                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
                        print(f"{path.name}: ok, {time.perf_counter() - t:.0f} s", flush=True)
                    except CellExecutionError as e:
                        failed.append(path.name)
                        print(f"{path.name}: FAILED after {time.perf_counter() - t:.0f} s", flush=True)
                        print(str(e)[-3000:], flush=True)
                    print("   slowest cells:", slowest(nb), flush=True)
            finally:
                os.environ.clear()
                os.environ.update(saved)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print("failed:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(tuple(sys.argv[1:]) or DEFAULT))
