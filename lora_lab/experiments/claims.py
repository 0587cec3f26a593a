"""Three claims often made about LoRA, put to the test on one model and one task (notebook 10).

1. **Does LoRA overfit less?** A training-set-size sweep (a few messages per class up to the full split),
   LoRA against full fine-tuning, several seeds, the same validation and test sets throughout. We record
   test accuracy and the train-test gap (accuracy on the model's own training messages minus test accuracy).
2. **Does LoRA forget less?** How far the model's *own* skill moves on text that has nothing to do with SMS
   spam: the first sentences of Python standard-library module docstrings (they ship with every Python, so
   this works offline). We compare the sentence embeddings (mean of the final hidden states over the real
   tokens) before and after fine-tuning: cosine similarity to the base model's embedding of the same
   sentence, and how many of each sentence's 5 nearest neighbours (within the set) stay the same. On GPT-2
   we also measure the language model's perplexity on the same text, through the tied token embedding
   (the LM head exists for every method, even after ``to_classifier`` removed it from the classifier).
   These are measured on the models the sweep trains, so forgetting against training size comes for free.
3. **Which directions does LoRA learn?** The subspace similarity of Hu et al. (2021), *LoRA: Low-Rank
   Adaptation of Large Language Models*, section 7.2, eq. (4), between the ``A`` matrices learned at two
   ranks, and how much of full fine-tuning's weight change the top directions of LoRA's update explain.

Why small training sets get a minimum number of steps: with a fixed 3 epochs, 16 messages and a batch of
8 give 6 optimizer steps, too few for any method to fit, let alone overfit. Each run therefore takes
at least ``min_steps`` steps: a small training set is cycled through several times within each epoch (shuffled
together) so that it is revisited many times. Every run records its ``epoch_size`` and ``steps``.

Runs are written to one JSON file after each run (atomically, :func:`lora_lab.utils.files.atomic_write`), and a
second launch with the same settings skips the runs already there, so a long sweep can be stopped and
resumed. ``python -m lora_lab.claims --help`` lists the options; ``--profile smoke`` runs a tiny version in
seconds (its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import math
import os
import platform
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from ..lora.model import lora_layers, merge_lora
from ..train.loop import evaluate
from ..train.methods import apply_method
from ..utils import env
from ..utils.files import atomic_write, write_json
from ..utils.machine import checkout_root, committed_file, pick_device, set_seed
from ..utils.precision import precision_for, precision_name
from .measures import embed, explained_share, forgetting, perplexity, subspace_similarity, top_energy_share
from .paired import paired
from .profiles import SMOKE_BANNER, get_settings, load_backbone, load_splits
from .results import ResultsFile, exit_on_results_error, now, read_results
from .runs import finetune

__all__ = ["ClaimsConfig", "config_for", "unrelated_texts", "text_sha256", "train_subset", "plan_steps",
           "Repeated", "run_claims", "analyse_directions", "load_results", "runs_frame", "spread_table",
           "compare", "committed_results_path", "main", "FULL", "DEFAULT_RESULTS"]

SCHEMA = "lora_lab.claims/1"
# the checkout (results and run folders live beside the package); the working folder when installed from a wheel
REPO = checkout_root() or Path.cwd()
# outside benchmarks/*.json on purpose: lora_lab.experiments.bench.committed_results() reads every file there as a
# benchmark
DEFAULT_RESULTS = {p: REPO / "benchmarks" / "claims" / f"claims-{p}.json" for p in ("real", "offline", "smoke")}
FULL = "full split"  # the per_class value that means "every training message"


@dataclass(frozen=True)
class ClaimsConfig:
    """What the experiments run. Everything that changes a run's numbers is here and is stored in the results
    file; resuming with different values is refused (the old runs would not be comparable)."""

    sizes: tuple = (8, 16, 32, 64, 128, 256, FULL)  # messages per class in the training set
    seeds: tuple = (123, 124, 125)
    epochs: int = 3
    min_steps: int = 100  # optimizer steps at least, for the small training sets (see the module docstring)
    batch_size: int = 8
    rank: int = 8  # the sweep's LoRA, and the small rank of part 3
    big_rank: int = 64  # the large rank of part 3 (trained on the full split only)
    alpha: float = 16  # scaling alpha/rank, lora_lab's default rule; notebook 8: fine at every rank 1-64
    n_texts: int = 200  # unrelated sentences for the forgetting measures
    neighbours: int = 5
    # how training runs: "auto" (the course default) is resolved to the dtype this machine trains in when a
    # launch starts (bf16 autocast on a CPU with native bf16, else fp32) and stored resolved, so a resume on
    # a machine that resolves it differently is refused instead of pooling bf16 and fp32 runs
    precision: str = "auto"
    # training batches: "mixed" = similar lengths, classes mixed (lora_lab.data.bucketing, the course default);
    # "length" = similar lengths only, the default until lesson 3 measured that it sorts spam from ham
    bucket: bool | str = "mixed"

    def comparable(self) -> dict:
        """The fields that must match for runs to be pooled (sizes and seeds may grow between launches)."""
        d = asdict(self)
        d.pop("sizes"), d.pop("seeds")
        return d


def config_for(settings) -> ClaimsConfig:
    """The offline/real sweep, or a tiny one for the smoke profile (seconds on a CPU)."""
    if settings.is_smoke:
        return ClaimsConfig(sizes=(4, FULL), seeds=tuple(settings.seeds), epochs=1, min_steps=4, batch_size=4,
                            rank=2, big_rank=8, n_texts=40, neighbours=3)
    return ClaimsConfig(seeds=tuple(settings.seeds), epochs=settings.epochs, batch_size=settings.batch_size)


# --------------------------------------------------------------------------------------------------------------
# data


def unrelated_texts(n: int = 200, min_chars: int = 25, max_chars: int = 200) -> tuple[list[str], str]:
    """``n`` English sentences unrelated to SMS spam, available offline: the first sentence of the docstrings of
    the Python standard library's modules, read from their source files (parsed with :mod:`ast`, never
    imported: importing ``antigravity`` opens a browser), in sorted path order, ``test``/``idlelib`` and
    duplicates skipped. Returns ``(texts, source)``; ``source`` names the Python version the texts come from
    (another Python has slightly different docstrings, so it is recorded with the results)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("test/", "idlelib/", "site-packages/", "dist-packages/", "lib2to3/tests")) or \
                "/test" in rel or "tests/" in rel:
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        if not doc:
            continue
        first = " ".join(doc.strip().split("\n\n")[0].split())
        first = first.split(". ")[0].rstrip(".") + "."
        if min_chars <= len(first) <= max_chars and first.lower() not in seen and first[0].isalpha():
            seen.add(first.lower())
            texts.append(first)
        if len(texts) == n:
            break
    if len(texts) < n:
        raise ValueError(f"only {len(texts)} standard-library docstring sentences found under {root}, {n} "
                         f"asked for; use a smaller n (ClaimsConfig.n_texts)")
    return texts, f"first sentences of Python {platform.python_version()} standard-library module docstrings"


def text_sha256(texts) -> str:
    """A fingerprint of the unrelated texts, stored with the results: the same fingerprint, the same sentences."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def train_subset(train: pd.DataFrame, per_class, seed: int) -> pd.DataFrame:
    """``per_class`` messages of each class from the training split (or all of it for :data:`FULL`).

    Per seed, each class is shuffled once and the first ``per_class`` rows are kept, so the sets are nested
    (the 16-per-class set contains the 8-per-class set) and a seed's spread includes which messages were
    drawn. The validation and test sets are never touched."""
    if per_class == FULL or per_class is None:
        return train
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive whole number or {FULL!r}, got {per_class!r}")
    smallest = int(train["label_id"].value_counts().min())
    if per_class > smallest:
        raise ValueError(f"per_class={per_class} is more than the smaller class holds ({smallest} training "
                         f"messages); use at most {smallest}, or {FULL!r}")
    parts = [g.sample(frac=1.0, random_state=seed).iloc[:per_class] for _, g in train.groupby("label_id")]
    return pd.concat(parts).sort_index()


def plan_steps(n_train: int, batch_size: int, epochs: int, min_steps: int) -> tuple[int, int]:
    """``(epoch_size, steps)``: how many messages make one epoch, and the optimizer steps that gives over
    ``epochs`` epochs (the last partial batch of an epoch is dropped). ``epoch_size`` is ``n_train`` when plain
    epochs already give ``min_steps``; otherwise the smallest whole number of batches that does, so a small
    training set is cycled through about ``epoch_size / n_train`` times per epoch (see :class:`Repeated`)."""
    if n_train < batch_size:
        raise ValueError(f"{n_train} training messages do not fill one batch of {batch_size}; use a smaller "
                         f"batch_size or more messages per class")
    per_epoch = max(n_train // batch_size, math.ceil(min_steps / epochs))
    epoch_size = n_train if per_epoch == n_train // batch_size else per_epoch * batch_size
    return epoch_size, epochs * per_epoch


class Repeated(Dataset):
    """A dataset cycled to ``length`` items (item ``i`` is message ``i % n``): an epoch over it visits every
    message ``length // n`` or ``length // n + 1`` times, shuffled together by the loader, so a batch may hold
    the same message twice."""

    def __init__(self, dataset: Dataset, length: int):
        if length < len(dataset):
            raise ValueError(f"length must be at least the dataset's {len(dataset)} items, got {length}")
        self.dataset, self.length = dataset, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        return self.dataset[i % len(self.dataset)]


# --------------------------------------------------------------------------------------------------------------
# forgetting


# --------------------------------------------------------------------------------------------------------------
# directions


# --------------------------------------------------------------------------------------------------------------
# the runs


def committed_results_path(profile: str) -> Path | None:
    """The committed results file of a profile: in the checkout's ``benchmarks/claims/``, else inside the installed
    package (``lora_lab.benchmarks/claims``, e.g. on Colab; it ships there only if the packaging lists
    ``claims/*.json``), else None."""
    if DEFAULT_RESULTS[profile].exists():
        return DEFAULT_RESULTS[profile]
    return committed_file("claims", DEFAULT_RESULTS[profile].name)


def load_results(path) -> dict | None:
    """The results file as a dict, or None when there is none yet."""
    path = Path(path)
    return read_results(path, "runs") if path.exists() else None


def _key(method: str, rank: int | None, per_class, seed: int) -> str:
    return f"{method}{'-' + str(rank) if method == 'lora' else ''}|{per_class}|{seed}"


def _delta_file(work_dir, key: str) -> Path:
    """Where a full-split run's weight change is kept: ``lora-8_full-split_123.pt``."""
    return Path(work_dir) / (key.replace("|", "_").replace(" ", "-") + ".pt")


def _linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of the body's Linear layers (the ones LoRA wraps), by module name, as float32 copies."""

    wrapped = lora_layers(model)
    if wrapped:
        return {n: m.linear.weight.detach().float().cpu().clone() for n, m in wrapped.items()}
    return {n: m.weight.detach().float().cpu().clone() for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] != "classifier"}


def _lora_deltas(model: nn.Module) -> dict[str, dict]:
    return {n: {"A": m.lora.A.detach().float().cpu().clone(), "B": m.lora.B.detach().float().cpu().clone(),
                "scaling": float(m.lora.scaling)} for n, m in lora_layers(model).items()}


def run_claims(settings, results_path=None, work_dir=None, cfg: ClaimsConfig | None = None, *, log=print,
               command: str | None = None, max_runs: int | None = None, device="cpu") -> dict:
    """Run every experiment of the sweep that is not in the results file yet, saving after each run.

    Order: seed by seed (so an interrupted sweep still has whole curves); within a seed first the three
    full-split models (LoRA at ``rank``, full fine-tuning, LoRA at ``big_rank``: they serve all three parts, and
    the direction analysis runs as soon as they exist), then the smaller training sets from small to large,
    LoRA then full fine-tuning. The full-split models' weight changes go to ``work_dir`` (not committed: tens of MB)
    for :func:`analyse_directions`. ``max_runs`` stops after that many new runs (tests). Returns the results.
    """

    cfg = cfg or config_for(settings)
    device = torch.device(device)
    if cfg.precision == "auto":
        cfg = ClaimsConfig(**{**asdict(cfg), "precision": precision_name(precision_for(device, "auto"))})
    log = log or (lambda message: None)
    results_path = Path(results_path or DEFAULT_RESULTS[settings.profile])
    work_dir = Path(work_dir or REPO / "runs" / f"claims-{settings.profile}")
    texts, source = unrelated_texts(cfg.n_texts)
    def comparable(results):
        if results.get("schema") != SCHEMA:
            raise ValueError(f"{results_path} is not a claims results file (schema {results.get('schema')!r}); "
                             "pass another --out")
        if results["profile"] != settings.profile or results["config"] != cfg.comparable():
            raise ValueError(f"{results_path} holds runs of profile {results['profile']!r} with settings "
                             f"{results['config']}, which differ from this launch's ({settings.profile!r}, "
                             f"{cfg.comparable()}): its runs would not be comparable. Use the same settings, "
                             "or another --out")
        if results["unrelated_texts"]["sha256"] != text_sha256(texts):
            raise ValueError(f"the unrelated texts differ from the ones {results_path} was measured on "
                             f"({results['unrelated_texts']['source']}); this Python has other docstrings. "
                             "Resume with that Python, or use another --out")

    file = ResultsFile(results_path, {
        "schema": SCHEMA, "profile": settings.profile, "model": settings.model, "config": cfg.comparable(),
        "sizes": list(cfg.sizes), "seeds": list(cfg.seeds),
        "unrelated_texts": {"source": source, "n": len(texts), "sha256": text_sha256(texts)},
        "launches": [], "directions": []}, key=lambda r: r["key"], check=comparable, indent=1)
    results = file.data
    results["sizes"] = list(dict.fromkeys(results["sizes"] + list(cfg.sizes)))
    results["seeds"] = list(dict.fromkeys(results["seeds"] + list(cfg.seeds)))
    file.record_launch(command or "run_claims()", device)
    done = file.done()

    backbone = load_backbone(settings, verbose=False)
    train, val, test = load_splits(settings)
    val_ds, test_ds = backbone.datasets(val, test)
    val_loader, test_loader = backbone.loader(val_ds, 32), backbone.loader(test_ds, 32)
    text_df = pd.DataFrame({"text": texts, "label_id": 0})
    (text_ds,) = backbone.datasets(text_df)
    text_loader = backbone.loader(text_ds, 32)
    base = backbone.classifier(device=device)
    base_emb = embed(base, text_loader)
    base_weights = _linear_weights(base)
    lm_ids = None
    if backbone.kind == "decoder":
        lm_ids = backbone.tokenizer.encode_ordinary(" ".join(texts))
        results.setdefault("base_perplexity", perplexity(base, lm_ids))
    del base
    new_runs = 0
    analyse_directions(results, work_dir, cfg, backbone)  # from the models of earlier launches, with this code
    file.save()

    plan = []
    for seed in cfg.seeds:  # the full-split models first: they serve all three parts
        if FULL in cfg.sizes:
            plan += [("lora", cfg.rank, FULL, seed), ("full", None, FULL, seed), ("lora", cfg.big_rank, FULL, seed)]
        for size in cfg.sizes:
            if size != FULL:
                plan += [("lora", cfg.rank, size, seed), ("full", None, size, seed)]
    for method, rank, size, seed in plan:
        key = _key(method, rank, size, seed)
        if key in done:
            continue
        if max_runs is not None and new_runs >= max_runs:
            break
        sub = train_subset(train, size, seed)
        (train_ds,) = backbone.datasets(sub)
        epoch_size, steps = plan_steps(len(sub), cfg.batch_size, cfg.epochs, cfg.min_steps)
        log(f"[{now()}] {key}: {len(sub)} training messages, {epoch_size} per epoch, {steps} steps ...")
        r = finetune(backbone, method, Repeated(train_ds, epoch_size), val_loader, test_loader, seed=seed,
                     epochs=cfg.epochs, batch_size=cfg.batch_size, rank=rank or cfg.rank, alpha=cfg.alpha, log=None,
                     device=device, precision=cfg.precision, bucket=cfg.bucket)
        model = r["model"]
        fit = evaluate(model, backbone.loader(train_ds, 32), device)
        if method == "lora":
            deltas = _lora_deltas(model)
            merge_lora(model)  # the model as it would be deployed: one plain weight per layer
        elif size == FULL:
            deltas = {n: w - base_weights[n] for n, w in _linear_weights(model).items()}
        row = {"key": key, "method": method, "rank": rank, "alpha": cfg.alpha if method == "lora" else None,
               "per_class": size, "n_train": len(sub), "seed": seed, "epoch_size": epoch_size, "steps": steps,
               "epochs": cfg.epochs, "lr": r["lr"], "trainable": r["trainable"],
               "train_acc": fit["accuracy"], "train_loss": fit["loss"], "val_acc": r["val_acc"],
               "test_acc": r["test_acc"], "test_loss": r["test_loss"], "gap": fit["accuracy"] - r["test_acc"],
               "train_s": round(r["train_s"], 1), "precision": r["precision"]}
        row.update(forgetting(base_emb, embed(model, text_loader), cfg.neighbours))
        if lm_ids is not None:
            row["perplexity"] = perplexity(model, lm_ids)
        if size == FULL:
            work_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(_delta_file(work_dir, key), lambda tmp, d=deltas: torch.save(d, tmp))
        file.add(row)
        done.add(key)
        new_runs += 1
        log(f"[{now()}] {key}: test {row['test_acc']:.1%}, train {row['train_acc']:.1%}, cos {row['cos_mean']:.4f}, "
            f"nn {row['nn_overlap']:.2f}, {row['train_s']:.0f} s")
        if method == "lora" and rank == cfg.big_rank:
            analyse_directions(results, work_dir, cfg, backbone)
            file.save()
        del model, r
    analyse_directions(results, work_dir, cfg, backbone)
    results["complete"] = all(_key(*p) in done for p in plan)
    file.save()
    return results


def _initial_A(backbone, seed: int, rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """Each LoRA layer's ``A`` as it was before training, rebuilt exactly as :func:`lora_lab.experiments.runs.finetune`
    draws it (seed, fresh classifier, then LoRA): the control for :func:`subspace_similarity` of trained ``A``s."""

    set_seed(seed)
    model = apply_method(backbone.classifier(), "lora", rank, alpha)
    return {n: m.lora.A.detach().float().cpu().clone() for n, m in lora_layers(model).items()}


def analyse_directions(results: dict, work_dir, cfg: ClaimsConfig, backbone=None) -> None:
    """Part 3 for every seed whose three full-split models (LoRA at ``rank``, LoRA at ``big_rank``, full) have
    their weight changes in ``work_dir``; adds or replaces ``results["directions"]``. Per layer type (query,
    key, value, attention output, intermediate, output), averaged over the layers:

    * ``phi``: the (rank x big_rank) grid of :func:`subspace_similarity` between the two LoRAs' ``A``;
    * ``phi_delta``: the same on the input-side singular vectors of the updates ``delta W`` themselves;
    * ``phi_init`` (when ``backbone`` is given): the same on the two ``A`` matrices *before* training, the control
      that shows how much of ``phi`` the random start explains;
    * ``explained``/``explained_big``: :func:`explained_share` of full fine-tuning's change by the top 1..rank
      directions of each LoRA; ``ceiling``: :func:`top_energy_share` of the full change itself."""
    work_dir = Path(work_dir)
    out = []
    for seed in results["seeds"]:
        files = [_delta_file(work_dir, _key(m, r, FULL, seed))
                 for m, r in (("lora", cfg.rank), ("lora", cfg.big_rank), ("full", None))]
        if not all(f.exists() for f in files):
            continue
        small, big, full = (torch.load(f) for f in files)
        init = None
        if backbone is not None:
            init = tuple(_initial_A(backbone, seed, r, cfg.alpha) for r in (cfg.rank, cfg.big_rank))
        ks = list(range(1, cfg.rank + 1))
        by_type: dict[str, list] = {}
        for name in sorted(small):
            s, b, f = small[name], big[name], full[name]
            ds, db = (s["A"] @ s["B"]).T * s["scaling"], (b["A"] @ b["B"]).T * b["scaling"]
            by_type.setdefault(_layer_kind(name), []).append({
                "phi": subspace_similarity(s["A"], b["A"]),
                "phi_delta": subspace_similarity(_input_directions(ds, cfg.rank), _input_directions(db, cfg.big_rank)),
                "explained": explained_share(f, ds, ks), "explained_big": explained_share(f, db, ks),
                "ceiling": top_energy_share(f, ks), "lora_norm_ratio": float(ds.norm() / f.norm()),
                "d_in": s["A"].shape[0],
                **({"phi_init": subspace_similarity(init[0][name], init[1][name])} if init else {})})
        for kind, rows in by_type.items():
            def mean(k, rows=rows):
                return torch.stack([torch.as_tensor(r[k], dtype=torch.float64) for r in rows]).mean(0).tolist()

            def rounded(x):
                return [rounded(v) for v in x] if isinstance(x, list) else round(x, 4)

            out.append({"seed": seed, "layer": kind, "n_layers": len(rows), "d_in": rows[0]["d_in"],
                        **{k: rounded(mean(k)) for k in ("phi", "phi_delta", "phi_init", "explained", "explained_big",
                                                         "ceiling", "lora_norm_ratio") if k in rows[0]}})
    results["directions"] = out


def _input_directions(delta: torch.Tensor, r: int) -> torch.Tensor:
    """The top ``r`` input directions of an update shaped like ``nn.Linear.weight`` (``(out, in)``): its first ``r``
    right-singular vectors as the columns of an ``(in, r)`` matrix, each scaled by its singular value. The scaling
    matters: :func:`subspace_similarity` orders directions by singular value, and orthonormal columns would all
    tie (any rotation of them is an equally valid SVD), losing which direction is the top one."""
    svd = torch.linalg.svd(delta.double(), full_matrices=False)
    return svd.Vh[:r].T * svd.S[:r]


def _layer_kind(name: str) -> str:
    """A layer's role from its module name (MiniLM/BERT or GPT-2 naming)."""
    for part, kind in ((".query", "query"), (".key", "key"), (".value", "value"), ("attention.output", "attn-out"),
                       ("intermediate", "intermediate"), ("output.dense", "output"), ("c_attn", "attn (qkv)"),
                       ("attn.c_proj", "attn-out"), ("c_fc", "mlp-in"), ("mlp.c_proj", "mlp-out")):
        if part in name:
            return kind
    return name.rsplit(".", 1)[-1]


def runs_frame(results: dict) -> pd.DataFrame:
    """The runs as a DataFrame, with ``size`` a sortable number (the full split as its message count) and
    ``label`` the method with its rank (``lora-8``, ``full``)."""
    df = pd.DataFrame(results["runs"])
    if df.empty:
        return df
    df["label"] = [f"lora-{r}" if m == "lora" else m for m, r in zip(df["method"], df["rank"].fillna(0).astype(int))]
    df["size"] = [n if p == FULL else 2 * int(p) for p, n in zip(df["per_class"], df["n_train"])]
    return df


def spread_table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, min and max of ``metric`` over the seeds, per method and training size (one row each), with the
    number of seeds: what the plots' bands show (differences are judged by :func:`compare`, paired by seed)."""
    g = df.groupby(["size", "label"])[metric]
    return g.agg(["mean", "min", "max", "count"]).rename(columns={"count": "seeds"})


def compare(df: pd.DataFrame, metric: str, a: str, b: str, min_effect: float = 0.0) -> pd.DataFrame:
    """Per training size: ``metric`` of method ``a`` minus method ``b``, paired by seed, judged by the course's one
    rule (:func:`lora_lab.experiments.paired.paired`): the mean difference, its 95% interval, the seeds both have,
    and a verdict, ``"<a> higher"``/``"<b> higher"`` (the interval excludes zero and the mean difference is at
    least ``min_effect``, in the metric's units), ``"equivalent"`` or ``"undecided"``."""
    rows = []
    for size in sorted(df["size"].unique()):
        at = df[df["size"] == size]
        va, vb = ({int(r.seed): float(getattr(r, metric)) for r in at[at.label == m].itertuples()} for m in (a, b))
        if not set(va) & set(vb):
            continue
        p = paired(va, vb, (a, b), min_effect=min_effect)
        verdict = p.verdict.replace(" better", " higher")
        rows.append({"size": size, f"{a} - {b}": p.mean, "95% low": p.low, "95% high": p.high,
                     "seeds": len(p.seeds), "verdict": verdict})
    return pd.DataFrame(rows).set_index("size")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora_lab.claims", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Resumable: runs already in --out are skipped. Example (37 min for the "
                                       "committed file on a 2-core AMD EPYC with native bf16, evaluation "
                                       "included):\n"
                                       "  python -m lora_lab.claims --profile offline")
    p.add_argument("--profile", choices=("real", "offline", "smoke"), default=env.get("LORA_LAB_PROFILE"),
                   help="which model (default: LORA_LAB_PROFILE, else real)")
    p.add_argument("--out", help="results JSON (default benchmarks/claims/claims-<profile>.json)")
    p.add_argument("--work-dir", help="where the full-split weight changes go (default runs/claims-<profile>)")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the profile's seeds")
    p.add_argument("--max-runs", type=int, help="stop after this many new runs")
    p.add_argument("--analyse-only", action="store_true",
                   help="only redo the direction analysis (part 3) from --work-dir into --out; no training")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available, as utils.machine.pick_device)")
    a = p.parse_args(argv)
    os.environ.setdefault("LORA_LAB_PROGRESS", "0")  # one log line per run instead of progress bars on stderr

    settings = get_settings(a.profile, quiet=True)
    if settings.is_smoke:
        print(SMOKE_BANNER)
    cfg = config_for(settings)
    if a.seeds:
        cfg = ClaimsConfig(**{**asdict(cfg), "seeds": tuple(a.seeds)})
    command = "python -m lora_lab.claims " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.analyse_only:
        out = Path(a.out or DEFAULT_RESULTS[settings.profile])
        with exit_on_results_error():
            res = load_results(out)
        if res is None:
            raise SystemExit(f"no results file {out} to analyse; run the sweep first (without --analyse-only)")
        analyse_directions(res, a.work_dir or REPO / "runs" / f"claims-{settings.profile}",
                           ClaimsConfig(**{**asdict(cfg), **res["config"]}), load_backbone(settings, verbose=False))
        res["updated"] = now()
        write_json(out, res, indent=1)
        print(f"direction analysis for seeds {sorted({d['seed'] for d in res['directions']})} written to {out}")
        return 0

    with exit_on_results_error():  # corrupt, truncated or foreign --out: it is left as it was
        res = run_claims(settings, a.out, a.work_dir, cfg, command=command.strip(), max_runs=a.max_runs,
                         device=pick_device(a.device), log=lambda s: print(s, flush=True))
    print(f"{len(res['runs'])} runs in the results file; complete: {res['complete']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
