"""Fine-tune GPT-2 as an SMS-spam classifier from the command line.

    python -m lora_lab.finetune --model gpt2 --method lora --rank 16 --alpha 16 --epochs 5
    python -m lora_lab.finetune --model tiny --weights random --epochs 1      # offline, seconds, meaningless
    torchrun --nproc_per_node=2 -m lora_lab.finetune --model gpt2 --method lora   # several GPUs / processes

Writes ``metrics.json``, ``history.csv`` and ``curves.png`` to ``--out`` (and the adapter for LoRA).
Under ``torchrun`` it uses DistributedDataParallel (nccl on GPUs, gloo on CPU); ``--batch-size`` is
per process, so the global batch is ``batch_size * world_size``; only the main process (DDP rank 0,
not to be confused with ``--rank``, LoRA's rank) writes and prints.

From Python, build a :class:`FinetuneConfig` (its fields are the flags) and call :func:`run`:
``run(FinetuneConfig(model="tiny", weights="random", epochs=1))``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..data.sms import default_data_dir, download_sms_spam, spam_splits
from ..lora.adapter_file import save_adapter
from ..lora.contents import ADAPTER_CONFIG
from ..lora.interop import HF_CONFIG, check_export_folder, export_merged
from ..lora.layer import check_hparams
from ..lora.model import count_parameters
from ..lora.targets import TARGET_PRESETS
from ..models.gpt2 import GPT, PRESETS, WeightsIntegrityError, WeightsUnavailableError, config_of, load_pretrained
from ..train import distributed
from ..train.methods import DEFAULT_LR, METHODS
from ..utils import env
from ..utils.files import atomic_write, folder_problem, permissions, swap_folder, write_json
from ..utils.machine import device_name, device_problem, set_seed
from ..utils.plots import plot_history
from .profiles import SMOKE_BANNER, gpt2_backbone
from .runs import finetune

__all__ = ["FinetuneConfig", "run", "validate", "build_parser", "main", "UsageError"]

OFFLINE_HINT = ("For a quick offline run without weights: python -m lora_lab.finetune --model tiny --weights random "
                "--epochs 1 (a tiny random GPT-2; its numbers mean nothing).")
WEIGHTS = ("pretrained", "random")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EXPORTS = ("peft", "merged")


class UsageError(ValueError):
    """A command-line argument (or config field) cannot work; the message names the argument and what would."""


def _number(lo: float, *, strict: bool = False, whole: bool = True, optional: bool = False) -> dict:
    """The rule for a numeric flag: ``>= lo`` (``> lo`` if ``strict``), a whole number if ``whole``; with
    ``optional``, ``None`` means "the default"."""
    return {"lo": lo, "strict": strict, "whole": whole, "optional": optional}


def _flag(default, help: str | None = None, *, choices=None, number: dict | None = None, repeat: bool = False):
    """A field of :class:`FinetuneConfig` that is also a command-line flag: the parser, :func:`validate` and the
    help text are all made from these, so a default, a choice or a bound is written once."""
    meta = {"help": help, "choices": choices, "number": number, "repeat": repeat}
    return field(default=default, metadata=meta)


@dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs. The command line is made from these fields (each is the flag of
    the same name, ``--batch-size`` -> ``batch_size``, with its default, choices and bounds); Python code (the
    benchmark, a notebook) builds one directly: ``run(FinetuneConfig(model="tiny", weights="random", epochs=1))``."""

    model: str = _flag("gpt2", "gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, or a local folder")
    weights: str = _flag("pretrained", "random: presets only, a quick offline run whose numbers mean nothing",
                         choices=WEIGHTS)
    method: str = _flag("lora", choices=METHODS)
    rank: int = _flag(16, "LoRA's rank r (not the DDP rank of a process)", number=_number(1))
    alpha: float = _flag(16.0, "LoRA's alpha: the update is scaled by alpha/rank", number=_number(0, strict=True,
                                                                                                  whole=False))
    rslora: bool = _flag(False, "scale by alpha/sqrt(rank) instead of alpha/rank")
    lora_dropout: float = _flag(0.0, "dropout on LoRA's input, in [0, 1)", number=_number(0, whole=False))
    target: str = _flag("all", "which Linear layers get LoRA", choices=TARGET_PRESETS)
    epochs: int = _flag(5, number=_number(1))
    batch_size: int = _flag(8, "per process", number=_number(1))
    lr: float | None = _flag(None, "default: " + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_LR.items()),
                             number=_number(0, strict=True, whole=False, optional=True))
    weight_decay: float = _flag(0.1, number=_number(0, whole=False))
    max_length: int | None = _flag(None, "truncate messages to this many tokens (default: the model's context, "
                                   "e.g. 1024 for gpt2)", number=_number(1, optional=True))
    subset: int | None = _flag(None, "keep this many messages per class (quick runs)",
                               number=_number(1, optional=True))
    precision: str = _flag("auto", "auto: bf16 autocast on GPUs, and on CPUs with native bf16 where a probe shows "
                           "it is faster", choices=PRECISIONS)
    bucket: bool = _flag(True, "batch messages of similar length together, the classes mixed in each batch (less "
                         "padding; still a new order each epoch; lora_lab.data.bucketing)")
    device: str | None = _flag(None, "cpu, cuda, mps (default: the best available)")
    seed: int = _flag(123, number=_number(0))
    data_dir: str | None = _flag(None, "where the SMS Spam Collection is cached (default: data/)")
    out: str = _flag("runs/finetune", "the folder for metrics.json, history.csv, curves.png and the adapter")
    plot: bool = _flag(True, "write curves.png")
    export: tuple = _flag((), "also write out/adapter_peft (peft: loads with peft.PeftModel.from_pretrained) "
                          "and/or out/merged (merged: LoRA merged, loads with transformers' from_pretrained); "
                          "repeatable", choices=EXPORTS, repeat=True)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FinetuneConfig":
        """The config the parsed command line describes."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
        values["export"] = tuple(dict.fromkeys(values["export"] or ()))
        return cls(**values)


def _check_number(value, lo: float, *, strict: bool = False, whole: bool = True, shown=None, **_) -> str | None:
    """Why ``value`` is not a usable number (a whole one if ``whole``) ``>`` (``strict``) or ``>=`` ``lo``;
    None if it is. One rule for the command line's flags and for configs built in Python; ``shown`` is how
    the value was written (the flag's text)."""
    shown = repr(value) if shown is None else shown
    if whole and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        return f"expected a whole number, got {shown}"
    if whole:
        return f"must be at least {lo:g}, got {shown}" if value < lo else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < lo \
            or (strict and value == lo):
        return f"must be a finite number {'>' if strict else '>='} {lo:g}, got {shown}"
    return None


def _flag_type(rule: dict):
    """An argparse ``type`` that reads a number and applies :func:`_check_number`."""
    def parse(text: str):
        try:
            value = int(text) if rule["whole"] else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole number' if rule['whole'] else 'number'}, "
                                             f"got {text!r}") from None
        problem = _check_number(value, shown=text, **rule)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    parse.__name__ = "whole number" if rule["whole"] else "number"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per :class:`FinetuneConfig` field (booleans get ``--x``/``--no-x``)."""
    ap = argparse.ArgumentParser(prog="python -m lora_lab.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(FinetuneConfig):
        m, flag = f.metadata, "--" + f.name.replace("_", "-")
        kw = {"default": f.default, "help": m["help"], "dest": f.name}
        if m["repeat"]:
            kw.update(action="append", choices=m["choices"], default=None)
        elif isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif m["number"]:
            kw["type"] = _flag_type(m["number"])
        elif m["choices"]:
            kw["choices"] = m["choices"]
        ap.add_argument(flag, **kw)
    return ap


def validate(config: FinetuneConfig) -> int:
    """Check what can be checked before any work, and create ``out``.

    Everything that can fail is tried here, before data, model and training: a run must not train for an
    hour and then find that it cannot write its results. Raises :class:`UsageError` naming the flag.
    Returns the model's context length (its ``block_size``).
    """
    c = config
    for f in dataclasses.fields(FinetuneConfig):  # the flags' own rules, for configs built in Python
        flag, value, m = "--" + f.name.replace("_", "-"), getattr(c, f.name), f.metadata
        if m["choices"] and not m["repeat"] and value not in m["choices"]:
            raise UsageError(f"{flag} must be one of {m['choices']}, got {value!r}")
        rule = m["number"]
        problem = rule and not (value is None and rule["optional"]) and _check_number(value, **rule)
        if problem:
            raise UsageError(f"{flag}: {problem}")
    bad = [e for e in c.export if e not in EXPORTS]
    if bad:
        raise UsageError(f"--export must be one of {EXPORTS}, got {bad[0]!r}")
    if "peft" in c.export and c.method != "lora":
        raise UsageError(f"--export peft writes a LoRA adapter, but --method is {c.method!r}; use --export merged "
                         "for a whole model, or --method lora")
    if c.method == "lora":
        try:
            check_hparams(c.rank, c.alpha, c.lora_dropout)
        except (TypeError, ValueError) as e:
            flag = next((f for f in ("--rank", "--alpha") if str(e).startswith(f[2:])), "--lora-dropout")
            raise UsageError(f"{flag}: {e}") from None
    if c.weights == "random" and c.model not in PRESETS:
        raise UsageError(f"--weights random needs a preset --model ({sorted(PRESETS)}), got {c.model!r}")
    if c.weights == "pretrained" and c.model == "tiny":
        raise UsageError("--model tiny exists only with random weights: add --weights random")
    if c.model not in PRESETS and not Path(c.model).exists():
        raise UsageError(f"--model {c.model!r} is neither a preset ({sorted(PRESETS)}) nor an existing folder")
    try:
        model_config = config_of(c.model)
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {c.model}: {e}") from None
    block_size = model_config.block_size
    if c.method == "lora" and c.rank > model_config.n_embd:  # before A and B are allocated (rank 1e8: 100 GB)
        raise UsageError(f"--rank {c.rank} is above {c.model}'s width of {model_config.n_embd}: the update of a "
                         f"layer cannot have a higher rank, so the rest only costs memory; use at most "
                         f"{model_config.n_embd}")
    if c.max_length is not None and c.max_length > block_size:
        raise UsageError(f"--max-length {c.max_length} is longer than {c.model}'s context of {block_size} "
                         f"tokens; use at most {block_size} (or leave it out)")
    if not str(c.out).strip():  # Path("") is the working folder: the run would be written all over it
        raise UsageError("--out is empty: name the folder for the run's files, e.g. --out runs/finetune")
    out = Path(c.out).expanduser()
    problem = folder_problem(out)
    if problem:
        raise UsageError(f"--out {c.out}: cannot create this folder ({problem}); choose another --out")
    if out.is_dir() and not os.access(out, os.W_OK):
        raise UsageError(f"--out {c.out}: this folder is not writable; choose another --out")
    # what the run will write, checked now: a clash found after training would lose the trained model
    for name in ["metrics.json", "history.csv"] + (["curves.png"] if c.plot else []):
        if (out / name).is_dir():
            raise UsageError(f"--out {c.out}: {out / name} is a folder where the run writes a file; remove it or "
                             "choose another --out")
    folders = {"adapter": None} if c.method == "lora" else {}
    folders.update({"adapter_peft": ADAPTER_CONFIG} if "peft" in c.export else {})
    folders.update({"merged": HF_CONFIG} if "merged" in c.export else {})
    for name, marker in folders.items():
        if (out / name).exists() and not (out / name).is_dir():
            raise UsageError(f"--out {c.out}: {out / name} is a file where the run writes the folder {name}/; "
                             "remove it or choose another --out")
        if marker is not None:
            try:
                check_export_folder(out / name, marker)
            except FileExistsError as e:
                raise UsageError(f"--export: {e} (or choose another --out)") from None
    _check_device(c.device)
    _check_data(c.data_dir)
    try:  # last: a usage error above leaves no folder behind
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {c.out}: cannot create this folder ({e.strerror or e}); choose another "
                         "--out") from None
    return block_size


def _check_device(device: str | None) -> None:
    """``--device`` (or ``LORA_LAB_DEVICE`` without it) names a device torch knows and this machine has."""
    if device is None:
        try:
            device = env.device()  # a garbage value is an error naming the variable
        except ValueError as e:
            raise UsageError(str(e)) from None
        if device is None:
            return  # the best available
        flag, fix = f"LORA_LAB_DEVICE={device} (no --device given)", "set it to one that is, or unset it"
    else:
        flag, fix = f"--device {device}", "use one that is (cpu always is), or leave --device out for the best one"
    problem = device_problem(device)
    if problem:
        raise UsageError(f"{flag}: {problem}; {fix}")


def _check_data(data_dir: str | None) -> None:
    """The SMS Spam Collection is in the data folder (verified), or can be downloaded there now: a run must not
    create its folder and then find it has no data."""
    if data_dir is not None and not str(data_dir).strip():
        raise UsageError("--data-dir is empty: name the folder that holds (or will hold) SMSSpamCollection, or leave "
                         "it out for data/")
    try:
        folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    except ValueError as e:  # LORA_LAB_DATA_DIR cannot be a folder: the message names it
        raise UsageError(str(e)) from None
    if data_dir is not None:
        flag = f"--data-dir {data_dir}"
    elif env.data_dir() is not None:
        flag = f"LORA_LAB_DATA_DIR={env.get('LORA_LAB_DATA_DIR')} (no --data-dir given)"
    else:
        flag = f"the data (no --data-dir given, so {folder})"
    problem = folder_problem(folder)
    if problem:
        raise UsageError(f"{flag}: {problem}; name a folder")
    try:
        download_sms_spam(folder, progress=False)
    except (OSError, ValueError) as e:  # no data and no network; a corrupt file (DataIntegrityError)
        raise UsageError(f"{flag}: {e}") from None


_SPLIT_SHARE = {"training": "70", "validation": "10", "test": "20"}


def _splits(c: FinetuneConfig):
    """The balanced (train, val, test) split, with ``--subset`` problems reported as usage errors."""
    try:
        frames = spam_splits(c.data_dir, seed=c.seed, per_class=c.subset)
    except ValueError as e:
        if c.subset is None:
            raise
        raise UsageError(f"--subset {c.subset}: {e}") from None
    for split, df in zip(_SPLIT_SHARE, frames):
        if len(df) == 0:
            raise UsageError(f"--subset {c.subset} leaves the {split} split empty (it gets {_SPLIT_SHARE[split]}% "
                             f"of {2 * c.subset} messages); use --subset 5 or more")
    return frames


def _base_model(c: FinetuneConfig) -> GPT:
    """The GPT-2 to fine-tune: random weights for a preset (``--weights random``), else the pretrained ones."""
    if c.weights == "random":
        return GPT(PRESETS[c.model])
    try:
        return load_pretrained(c.model)
    except WeightsUnavailableError as e:
        raise WeightsUnavailableError(f"{e} {OFFLINE_HINT}") from None


def run(config: FinetuneConfig) -> dict:
    """Fine-tune once as ``config`` says; returns ``{"metrics", "history", "model"}``.

    Under ``torchrun`` every process runs this; only the main process (DDP rank 0) prints and writes files.
    Raises :class:`UsageError` for a config that cannot work (before any training), and
    :class:`lora_lab.models.gpt2.WeightsUnavailableError` when the pretrained weights cannot be had.
    """
    c = FinetuneConfig.from_args(config) if isinstance(config, argparse.Namespace) else config
    block_size = validate(c)
    ddp_rank, world, device = distributed.setup(c.device)
    is_main = ddp_rank == 0
    smoke = c.weights == "random"
    if is_main and smoke:
        print(SMOKE_BANNER)
    set_seed(c.seed)  # with the seeded splits and loaders: the same seed, the same run

    # Truncate to what the model can read: a message longer than its context would crash it mid-run.
    max_length = c.max_length or block_size
    bb = gpt2_backbone(c.model, lambda num_classes: _base_model(c).to_classifier(num_classes), max_length)
    train_ds, val_ds, test_ds = bb.datasets(*_splits(c))
    per_process = len(train_ds) // world
    if per_process < c.batch_size:
        raise UsageError(f"--batch-size {c.batch_size} is larger than the {per_process} training messages"
                         f"{' per process' if world > 1 else ''} (a partial batch is dropped, so no step would run); "
                         "lower --batch-size or raise --subset")
    # evaluation: each process takes every world-th example (no padding duplicates), sums are all-reduced
    val_loader, test_loader = (bb.loader(Subset(ds, range(ddp_rank, len(ds), world)), c.batch_size)
                               for ds in (val_ds, test_ds))

    lr = c.lr if c.lr is not None else bb.lr[c.method]

    started = []

    def announce(model, lr):  # the model is built: say what trains, and time from here (loading excluded)
        if is_main:
            print(f"{c.method} on {c.model} ({'random' if smoke else 'pretrained'} weights), "
                  f"{count_parameters(model)}, device {device}{f' x {world} processes' if world > 1 else ''}, "
                  f"lr {lr:g}")
        started.append(time.perf_counter())

    r = finetune(bb, c.method, train_ds, val_loader, test_loader, seed=c.seed, epochs=c.epochs,
                 batch_size=c.batch_size, lr=lr, rank=c.rank, alpha=c.alpha, device=device, log=print,
                 precision=c.precision, bucket=c.bucket, weight_decay=c.weight_decay, world=world,
                 ddp_rank=ddp_rank, on_start=announce, target=c.target, dropout=c.lora_dropout,
                 use_rslora=c.rslora)
    wall = time.perf_counter() - started[0]
    model, hist, params = r["model"], r["hist"], r["params"]
    test = {"accuracy": r["test_acc"], "loss": r["test_loss"]}
    cfg = model.config
    lora = c.method == "lora"
    metrics = {
        "smoke_numbers_mean_nothing": smoke,
        "model": c.model, "weights": c.weights, "method": c.method,
        # the exact base weights (None for random weights): source, hub commit, sha256 of the file
        "base_source": cfg.source, "base_revision": cfg.revision, "base_weights_sha256": cfg.weights_sha256,
        "rank": c.rank if lora else None, "alpha": c.alpha if lora else None,
        "lr": lr, "epochs": c.epochs, "batch_size_per_process": c.batch_size, "world_size": world,
        "max_length": max_length, "subset_per_class": c.subset, "seed": c.seed,
        "precision": hist.attrs["precision"],
        "precision_requested": c.precision, "bucket": c.bucket,
        "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "params_total": params.total, "params_trainable": params.trainable,
        "train_acc": hist["train_acc"].iloc[-1], "val_acc": hist["val_acc"].iloc[-1], "test_acc": test["accuracy"],
        "test_loss": test["loss"], "wall_s_with_eval": wall, "peak_mem_mb": float(hist["peak_mem_mb"].max()),
        "tokens_per_s": float(hist["tokens_per_s"].mean()),
    }
    if is_main:
        _write_results(c, metrics, hist, model, wall, test["accuracy"])
    return {"metrics": metrics, "history": hist, "model": model}


RUN_FILES = ("metrics.json", "history.csv", "curves.png", "adapter", "adapter_peft", "merged")  # what a run writes


def _write_results(c: FinetuneConfig, metrics: dict, hist, model, wall: float, test_acc: float) -> None:
    """metrics.json, history.csv, the adapter (LoRA), the exports and curves.png into ``out``, as one run.

    Everything is written into a hidden staging folder beside ``out`` first. When ``out`` holds nothing but an
    earlier run (or nothing), the staging folder then replaces it whole, so an interrupted write (Ctrl-C, a
    full disk) leaves the earlier run or the new one, never new metrics beside an old adapter. When ``out`` also
    holds files of yours, the new run's entries are moved in one by one instead (``metrics.json``, the run's
    record, last) and your files are left alone."""
    smoke = metrics["smoke_numbers_mean_nothing"]
    out = Path(c.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for stale in out.parent.glob(f".{out.name}.run-*.tmp*"):  # what a killed run left: ours to remove
            shutil.rmtree(stale, ignore_errors=True)
    except OSError:
        pass
    try:
        stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.run-", suffix=".tmp"))
        swap = all(p.name in RUN_FILES for p in out.iterdir())
    except OSError:  # the parent folder is not ours to write in: stage inside out, replace entry by entry
        stage = Path(tempfile.mkdtemp(dir=out, prefix=".run-", suffix=".tmp"))
        swap = False
    os.chmod(stage, permissions(0o777))  # the folder it may become follows the umask
    try:
        atomic_write(stage / "history.csv", lambda tmp: hist.to_csv(tmp, index=False))
        if c.method == "lora":
            save_adapter(model, stage / "adapter", base_model=c.model, task="sms-spam")
        if "peft" in c.export:
            save_adapter(model, stage / "adapter_peft", format="peft", base_model=c.model)
        if "merged" in c.export:
            export_merged(model, stage / "merged")
        if c.plot:
            fig = plot_history(hist, title=f"{c.method} on {c.model}" + (" (SMOKE: meaningless)" if smoke else ""))
            atomic_write(stage / "curves.png",
                         lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
        write_json(stage / "metrics.json", metrics)
        if swap:  # out is a run folder: swap it whole
            try:
                swap_folder(stage, out)
            except OSError:  # out cannot be renamed (a mount point, say); it is as it was: entry by entry below
                swap = False
        if not swap:  # files of yours in out (or no swap possible): replace the run's entries, the record last
            trash = stage.with_name(stage.name + ".old")
            trash.mkdir()
            for name in sorted(RUN_FILES, key=lambda n: n == "metrics.json"):
                if (out / name).exists() or (out / name).is_symlink():
                    os.replace(out / name, trash / name)
                if (stage / name).exists():
                    os.replace(stage / name, out / name)
    finally:
        for leftover in (stage, stage.with_name(stage.name + ".old")):
            shutil.rmtree(leftover, ignore_errors=True)
    print(f"test accuracy {test_acc:.1%}, wall time {wall:.1f}s (with evaluation); wrote {out}/")
    if smoke:
        print("(smoke run with random weights: these numbers mean nothing)")


def main(argv=None):
    """``python -m lora_lab.finetune``: parse the flags into a :class:`FinetuneConfig` and :func:`run` it. A
    usage problem is argparse's usage message (exit status 2); missing or corrupt weights a one-line error."""
    parser = build_parser()
    config = FinetuneConfig.from_args(parser.parse_args(argv))
    try:
        validate(config)  # before torch.distributed starts: a wrong argument is a usage message, at once
        run(config)
    except UsageError as e:
        parser.error(str(e))
    except (WeightsUnavailableError, WeightsIntegrityError) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()
