"""The lessons' sweeps: many fine-tunes that a lesson reads from a committed results file instead of running
them while the class waits (notebooks 4, 5 and 8, and the solutions).

A lesson must run top to bottom in a few minutes on a laptop, but some of its points need many fine-tunes:
notebook 5 compares three methods over five seeds (15 runs), notebook 8 sweeps seven ranks under three scaling
rules (39 runs with the extra seeds). So a lesson does what notebook 10 does with its claims:

* it shows and plots the rows of ``benchmarks/sweeps/<sweep>-<profile>.json``, made by
  ``python -m lora_lab.sweeps <sweep> --profile <profile>`` (machine, commit, precision and seeds recorded);
* it trains **one** point of the sweep live, with :func:`run_point`, the function that made every row of the file,
  and prints the live row beside the file's row for the same settings;
* ``RUN_ALL = True`` in the lesson (or ``LORA_LAB_RUN_ALL=1``) recomputes the whole sweep on this machine
  (:func:`lesson_results`), resumably, into ``runs/sweeps/`` (the committed file is never overwritten by a lesson).

The smoke profile has no committed file (its numbers mean nothing): there every lesson computes its small sweep.
The real profile (GPT-2) has none yet either, as GPT-2 cannot be downloaded where the committed results were made:
its lessons show the offline file, labelled as such, and train their live point on GPT-2.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from ..lora.layer import lora_scaling
from ..train.loop import NonFiniteLossError
from ..train.measure import checkpoint_bytes
from ..utils import env
from ..utils.machine import checkout_root, committed_file, pick_device
from ..utils.precision import precision_for, precision_name
from .profiles import SMOKE_BANNER, get_settings, load_backbone, load_splits
from .results import ResultsFile, ResultsFileError, exit_on_results_error, now, read_results
from .runs import finetune

__all__ = ["SWEEPS", "RULES", "METHODS", "Point", "plan", "live_point", "sweep_data", "run_point", "run_sweep",
           "committed_path", "load_sweep", "lesson_results", "frame", "main"]

SCHEMA = "lora_lab.sweep/1"
REPO = checkout_root() or Path.cwd()
SWEEPS = {"methods": "notebook 5: LoRA, the last block and full fine-tuning, the same seeds",
          "ranks": "notebook 8: ranks 1 to 64 under three scaling rules, more seeds at ranks 1, 8 and 64",
          "lrs": "notebook 5: learning rates 1e-5 to 1e-2 for LoRA and full fine-tuning, the same three seeds"}
METHODS = ("lora", "last-block", "full")
# the three scaling rules of notebook 2, as the use_rslora switch (None: raw alpha, expressed as alpha = 16 * r)
RULES = {"raw α": None, "α/r": False, "rsLoRA α/√r": True}
RANKS = (1, 2, 4, 8, 16, 32, 64)
SEEDED_RANKS = (1, 8, 64)  # the ranks that carry notebook 8's conclusions get every seed, the others one
RANK_ALPHA = 16
LRS = (1e-5, 1e-4, 1e-3, 1e-2)  # a decade apart, around both methods' defaults (lora_lab.train.methods)


@dataclass(frozen=True)
class Point:
    """One fine-tune of a sweep: everything that changes its numbers besides the profile's settings."""

    method: str
    seed: int
    epochs: int
    rank: int = 16
    alpha: float = 16
    rule: str = "α/r"  # one of RULES; raw α is alpha = RANK_ALPHA * rank with the α/r code
    lr: float | None = None  # None: the backbone's default for the method

    @property
    def key(self) -> str:
        lora = f"|r{self.rank}|a{self.alpha:g}|{self.rule}" if self.method == "lora" else ""
        lr = "" if self.lr is None else f"|lr{self.lr:g}"
        return f"{self.method}{lora}{lr}|e{self.epochs}|s{self.seed}"

    @property
    def use_rslora(self) -> bool:
        return bool(RULES[self.rule])


def _seeds(settings) -> tuple:
    """Five seeds where a lesson's point is a comparison (3 cannot decide a 1-point difference, see
    :mod:`lora_lab.experiments.paired`); the smoke profile keeps its two."""
    return tuple(settings.seeds) if settings.is_smoke else tuple(range(settings.seed, settings.seed + 5))


def plan(sweep: str, settings) -> list[Point]:
    """The points of a sweep for a profile, in the order they run."""
    if sweep == "methods":
        return [Point(m, s, settings.epochs) for m in METHODS for s in _seeds(settings)]
    if sweep == "ranks":
        ranks, seeded = ((1, 4, 16), (1,)) if settings.is_smoke else (RANKS, SEEDED_RANKS)
        epochs = min(settings.epochs, 2)  # 2 per point keeps 39 CPU fine-tunes affordable (smoke, quick: 1)
        seeds = _seeds(settings)[:3]
        pts = [Point("lora", settings.seed, epochs, r, RANK_ALPHA * r if rs is None else RANK_ALPHA, rule)
               for r in ranks for rule, rs in RULES.items()]
        pts += [replace(p, seed=s) for s in seeds[1:] for p in pts if p.rank in seeded]
        return pts
    if sweep == "lrs":
        lrs = (1e-4, 1e-2) if settings.is_smoke else LRS
        return [Point(m, s, min(settings.epochs, 2), lr=lr) for m in ("lora", "full") for lr in lrs
                for s in _seeds(settings)[:3]]
    raise ValueError(f"unknown sweep {sweep!r}: use one of {list(SWEEPS)}")


def live_point(sweep: str, settings) -> Point:
    """The point a lesson trains live: full fine-tuning for notebook 5 (its weight change is section 3's subject),
    α/r at rank 8 for notebook 8; the first seed."""
    if sweep in ("methods", "lrs"):
        return next(p for p in plan(sweep, settings) if p.method == "full")
    rank = 4 if settings.is_smoke else 8
    return next(p for p in plan(sweep, settings) if p.rank == rank and p.rule == "α/r")


def sweep_data(backbone, settings) -> tuple:
    """``(train_ds, val_loader, test_loader)`` as every run of a sweep sees them (the profile's split, evaluation in
    batches of ``settings.batch_size``): a lesson's live run uses these too, so its row is comparable to the file's."""
    train, val, test = load_splits(settings)
    train_ds, val_ds, test_ds = backbone.datasets(train, val, test)
    return train_ds, backbone.loader(val_ds, settings.batch_size), backbone.loader(test_ds, settings.batch_size)


def run_point(backbone, point: Point, train_ds, val_loader, test_loader, device="cpu", *, precision="auto",
              bucket=None, batch_size: int = 8, log=None) -> tuple[dict, dict | None]:
    """Train one point. Returns ``(row, result)``: ``row`` is what a results file stores (JSON-able: accuracies,
    losses, time, the per-epoch history), ``result`` is :func:`lora_lab.experiments.runs.finetune`'s dict with the
    trained ``model`` (None when the loss diverged: the row says ``diverged``)."""
    alpha_scaling = lora_scaling(point.rank, point.alpha, point.use_rslora)
    row = {"key": point.key, **asdict(point), "scaling": alpha_scaling if point.method == "lora" else None,
           "load1_before": round(os.getloadavg()[0], 2)}
    try:
        r = finetune(backbone, point.method, train_ds, val_loader, test_loader, seed=point.seed, epochs=point.epochs,
                     batch_size=batch_size, lr=point.lr, rank=point.rank, alpha=point.alpha,
                     use_rslora=point.use_rslora, device=device, precision=precision, bucket=bucket, log=log)
    except NonFiniteLossError as e:
        return {**row, "diverged": True, "error": str(e)[:300]}, None
    hist = r["hist"]
    row.update({"diverged": False, "lr": r["lr"], "trainable": r["trainable"], "params": r["params"].total,
                "train_loss": float(hist["train_loss"].iloc[-1]), "train_acc": r["train_acc"], "val_acc": r["val_acc"],
                "test_acc": r.get("test_acc"), "test_loss": r.get("test_loss"), "train_s": round(r["train_s"], 2),
                "tokens_per_s": round(r["tokens_per_s"], 1), "precision": r["precision"],
                "ckpt_bytes": checkpoint_bytes(r["model"], point.method),
                "hist": [{k: (float(v) if k != "epoch" else int(v)) for k, v in rec.items()}
                         for rec in hist.to_dict("records")],
                "load1_after": round(os.getloadavg()[0], 2)})
    return row, r


def _header(sweep: str, settings, backbone, device) -> dict:
    """What must match for rows to be pooled in one file."""
    return {"schema": SCHEMA, "sweep": sweep, "about": SWEEPS[sweep], "profile": settings.profile,
            "model": settings.model, "pretrained": settings.pretrained, "subset": settings.subset,
            "batch_size": settings.batch_size, "max_length": settings.max_length, "split_seed": settings.seed,
            "lr": dict(backbone.lr), "precision": precision_name(precision_for(torch.device(device), "auto")),
            "bucket": "mixed"}  # the training batches: similar lengths, classes mixed (lora_lab.data.bucketing)


def run_sweep(sweep: str, settings, out=None, *, device="cpu", points=None, log=print, command=None,
              backbone=None, known=None) -> dict:
    """Run every point of ``plan(sweep, settings)`` (or ``points``) not yet in ``out``, saving after each; a
    second launch resumes. ``known`` maps point keys to rows already trained (a lesson's live run), which are
    stored instead of being trained again. Returns the file's contents."""
    device = torch.device(device)
    log = log or (lambda message: None)
    backbone = backbone or load_backbone(settings, verbose=False)
    out = Path(out or REPO / "runs" / "sweeps" / f"{sweep}-{settings.profile}.json")
    header = _header(sweep, settings, backbone, device)

    def comparable(data):
        mismatch = {k: (data.get(k), v) for k, v in header.items() if data.get(k) != v}
        if mismatch:
            raise ValueError(f"{out} was made with other settings ({mismatch}, as (file, now)): its rows would not be "
                             "comparable. Use the same settings, or another --out")

    file = ResultsFile(out, header, key=lambda r: r["key"], check=comparable, indent=1)
    file.record_launch(command or f"run_sweep({sweep!r})", device)
    done = file.done()
    train_ds, val_loader, test_loader = sweep_data(backbone, settings)
    todo = [p for p in (points or plan(sweep, settings)) if p.key not in done]
    for i, p in enumerate(todo, 1):
        if known and p.key in known:
            file.add(known[p.key])
            continue
        log(f"[{now()}] {i}/{len(todo)} {p.key} ...")
        row, _ = run_point(backbone, p, train_ds, val_loader, test_loader, device, batch_size=settings.batch_size)
        file.add(row)
        log(f"[{now()}] {p.key}: " + ("diverged" if row["diverged"] else
                                       f"val {row['val_acc']:.2%}, test {row['test_acc']:.2%}, {row['train_s']:.0f} s"))
    file.data["complete"] = {p.key for p in plan(sweep, settings)} <= file.done()
    file.save()
    return file.data


def committed_path(sweep: str, profile: str) -> Path | None:
    """The committed results of a sweep for a profile (the checkout's ``benchmarks/sweeps/``, else the copy that
    ships in the package), or None."""
    return committed_file("sweeps", f"{sweep}-{profile}.json")


def load_sweep(path) -> dict:
    data = read_results(path)  # a corrupt or truncated file is named (ResultsFileError)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a sweep results file (schema {data.get('schema')!r}): pass a file written "
                         "by python -m lora_lab.sweeps")
    return read_results(path, "runs")  # and its runs are a list of rows


def frame(data: dict) -> pd.DataFrame:
    """The rows as a DataFrame (one per run), the per-epoch history kept as a DataFrame in ``hist``."""
    df = pd.DataFrame(data["runs"])
    if "hist" in df:
        df["hist"] = [pd.DataFrame(h) if isinstance(h, list) else None for h in df["hist"]]
    if "diverged" in df:
        df["diverged"] = df["diverged"].fillna(False).astype(bool)
    return df


def lesson_results(sweep: str, settings, backbone=None, *, device="cpu", run_all: bool | None = None,
                   live: dict | None = None, log=print) -> tuple[pd.DataFrame, dict]:
    """What a lesson shows: ``(rows, data)``. The committed file of the profile by default (the real profile,
    which has none, shows the offline file, and says so); with ``run_all`` (default: ``LORA_LAB_RUN_ALL``), or in
    the smoke profile, the whole sweep recomputed here (``live``, a row from :func:`run_point`, is reused)."""
    run_all = env.run_all() if run_all is None else run_all
    path = None if run_all or settings.is_smoke else committed_path(sweep, settings.profile)
    if path is None and not (run_all or settings.is_smoke):
        path = committed_path(sweep, "offline")
        if path is not None:
            log(f"No committed {sweep!r} sweep for the {settings.profile} profile: showing the offline profile's "
                f"(all-MiniLM-L6-v2 on a CPU, not {settings.model}). RUN_ALL = True recomputes it on {settings.model}.")
    if path is not None:
        data = load_sweep(path)
        launch = data["launches"][-1]
        log(f"from {path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}: {len(data['runs'])} runs "
            f"of {data['model']} ({data['profile']} profile), {data['precision']}, made by `{launch['command']}` at "
            f"commit {launch['commit']} on {launch['machine']}")
        return frame(data), data
    known = {live["key"]: live} if live else None
    with tempfile.TemporaryDirectory() as tmp:
        # RUN_ALL resumes in runs/sweeps/ (a second run picks up where the first stopped); the smoke profile's small
        # sweep starts afresh in a temporary file, so no row made by older code is reused
        out = None if run_all else Path(tmp) / f"{sweep}-{settings.profile}.json"
        data = run_sweep(sweep, settings, out, device=device, backbone=backbone, known=known, log=log,
                         command=f"lesson_results({sweep!r}{', run_all=True' if run_all else ''})")
    return frame(data), data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora_lab.sweeps", description=__doc__.split("\n\n")[0],
                                epilog="Resumable: runs already in --out are skipped. Example (what the committed "
                                       "files came from): python -m lora_lab.sweeps methods --profile offline "
                                       "--out benchmarks/sweeps/methods-offline.json")
    p.add_argument("sweep", choices=list(SWEEPS), help="; ".join(f"{k}: {v}" for k, v in SWEEPS.items()))
    p.add_argument("--profile", choices=("real", "offline", "smoke"), default=env.get("LORA_LAB_PROFILE"),
                   help="which model (default: LORA_LAB_PROFILE, else real)")
    p.add_argument("--out", help="results JSON (default runs/sweeps/<sweep>-<profile>.json)")
    p.add_argument("--max-runs", type=int, help="stop after this many new runs")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    a = p.parse_args(argv)
    os.environ.setdefault("LORA_LAB_PROGRESS", "0")
    settings = get_settings(a.profile, quiet=True)
    if settings.is_smoke:
        print(SMOKE_BANNER)
    if a.max_runs is not None and a.max_runs < 1:
        p.error(f"--max-runs must be 1 or more, got {a.max_runs}")
    points = plan(a.sweep, settings)
    if a.max_runs is not None:
        out = Path(a.out or REPO / "runs" / "sweeps" / f"{a.sweep}-{settings.profile}.json")
        try:
            done = {r["key"] for r in load_sweep(out)["runs"]} if out.exists() else set()
        except (ResultsFileError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        points = [pt for pt in points if pt.key not in done][:a.max_runs]
    command = "python -m lora_lab.sweeps " + " ".join(sys.argv[1:] if argv is None else argv)
    with exit_on_results_error():  # corrupt, truncated, foreign or other settings: --out is left as it was
        data = run_sweep(a.sweep, settings, a.out, device=pick_device(a.device), points=points,
                         command=command.strip(), log=lambda s: print(s, flush=True))
    print(f"{len(data['runs'])} runs in the results file; complete: {data['complete']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
