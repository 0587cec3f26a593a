"""Fine-tune GPT-2 as an SMS-spam classifier from the command line.

    python -m lora_lab.finetune --model gpt2 --method lora --rank 16 --alpha 16 --epochs 5
    python -m lora_lab.finetune --model tiny --weights random --epochs 1      # offline, seconds, meaningless
    torchrun --nproc_per_node=2 -m lora_lab.finetune --model gpt2 --method lora   # several GPUs / processes

Writes ``metrics.json``, ``history.csv`` and ``curves.png`` to ``--out`` (and the adapter for LoRA).
Under ``torchrun`` it uses DistributedDataParallel (nccl on GPUs, gloo on CPU); ``--batch-size`` is
per process, so the global batch is ``batch_size * world_size``; only rank 0 writes and prints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from .data import SpamDataset, get_tokenizer, make_loader, spam_splits
from .files import atomic_write
from .gpt2 import (GPT, PRESETS, WeightsIntegrityError, WeightsUnavailableError, config_of,
                   load_pretrained)
from .lora import TARGET_PRESETS, _check_hparams, count_parameters, save_adapter
from .methods import DEFAULT_LR, METHODS, apply_method
from .settings import SMOKE_BANNER
from .train import evaluate, pick_device, set_seed, train_classifier

OFFLINE_HINT = ("For a quick offline run without weights: python -m lora_lab.finetune --model tiny --weights random "
                "--epochs 1 (a tiny random GPT-2; its numbers mean nothing).")


class UsageError(ValueError):
    """A command-line argument cannot work; the message names the argument and what would."""


def _whole(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value
    parse.__name__ = "whole number"
    return parse


def _real(lo: float, *, strict: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (value <= lo if strict else value < lo):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {lo:g}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lora_lab.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, or a local folder")
    ap.add_argument("--weights", choices=["pretrained", "random"], default="pretrained")
    ap.add_argument("--method", choices=METHODS, default="lora")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(rank) instead of alpha/rank")
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--target", default="all", choices=TARGET_PRESETS)
    ap.add_argument("--epochs", type=_whole(1), default=5)
    ap.add_argument("--batch-size", type=_whole(1), default=8, help="per process")
    ap.add_argument("--lr", type=_real(0, strict=True), default=None, help="default: 5e-4 for lora, 5e-5 otherwise")
    ap.add_argument("--weight-decay", type=_real(0, strict=False), default=0.1)
    ap.add_argument("--max-length", type=_whole(1), default=None,
                    help="truncate messages to this many tokens (default: the model's context, e.g. 1024 for gpt2)")
    ap.add_argument("--subset", type=_whole(1), default=None, help="keep this many messages per class (quick runs)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/finetune")
    ap.add_argument("--no-plot", action="store_true")
    return ap


def validate_args(args) -> int:
    """Check the arguments that can be checked before any work, and create ``--out``.

    Everything that can fail is tried here, before data, model and training: a run must not train for an
    hour and then find that it cannot write its results. Raises :class:`UsageError` naming the argument.
    Returns the model's context length (its ``block_size``).
    """
    if args.method == "lora":
        try:
            _check_hparams(args.rank, args.alpha, args.lora_dropout)
        except (TypeError, ValueError) as e:
            flag = "--rank" if str(e).startswith("rank") else "--alpha" if str(e).startswith("alpha") else "--lora-dropout"
            raise UsageError(f"{flag}: {e}") from None
    if args.weights == "random" and args.model not in PRESETS:
        raise UsageError(f"--weights random needs a preset --model ({sorted(PRESETS)}), got {args.model!r}")
    if args.weights == "pretrained" and args.model == "tiny":
        raise UsageError("--model tiny exists only with random weights: add --weights random")
    if args.model not in PRESETS and not Path(args.model).exists():
        raise UsageError(f"--model {args.model!r} is neither a preset ({sorted(PRESETS)}) nor an existing folder")
    try:
        block_size = config_of(args.model).block_size
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {args.model}: {e}") from None
    if args.max_length is not None and args.max_length > block_size:
        raise UsageError(f"--max-length {args.max_length} is longer than {args.model}'s context of {block_size} "
                         f"tokens; use at most {block_size} (or leave it out)")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot create this folder ({e.strerror or e}); choose another "
                         "--out") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {args.out}: this folder is not writable; choose another --out")
    return block_size


def _dist_setup(device_arg):
    """Initialise torch.distributed when launched by torchrun; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, pick_device(device_arg)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and device_arg in (None, "cuda"):
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device(device_arg or "cpu"), "gloo"
    torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world, device


_PRECISION_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "fp32": "fp32"}


def run(args) -> dict:
    block_size = validate_args(args)
    rank, world, device = _dist_setup(args.device)
    main = rank == 0
    smoke = args.weights == "random"
    if main and smoke:
        print(SMOKE_BANNER)
    set_seed(args.seed)

    try:
        train_df, val_df, test_df = spam_splits(args.data_dir, seed=args.seed, per_class=args.subset)
    except ValueError as e:
        if args.subset is None:
            raise
        raise UsageError(f"--subset {args.subset}: {e}") from None
    for split, df in (("training", train_df), ("validation", val_df), ("test", test_df)):
        if len(df) == 0:
            raise UsageError(f"--subset {args.subset} leaves the {split} split empty (it gets "
                             f"{'70' if split == 'training' else '10' if split == 'validation' else '20'}% of "
                             f"{2 * args.subset} messages); use --subset 5 or more")
    tok = get_tokenizer()
    # Truncate to what the model can read: a message longer than its context would crash it mid-run.
    max_length = args.max_length or block_size
    train_ds, val_ds, test_ds = (SpamDataset(d, tok, max_length) for d in (train_df, val_df, test_df))
    per_process = len(train_ds) // world
    if per_process < args.batch_size:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {per_process} training messages"
                         f"{' per process' if world > 1 else ''} (a partial batch is dropped, so no step would run); "
                         "lower --batch-size or raise --subset")
    train_loader = make_loader(train_ds, args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                               num_replicas=world, rank=rank)
    # evaluation: each rank takes every world-th example (no padding duplicates), sums are all-reduced
    val_loader, test_loader = (make_loader(Subset(ds, range(rank, len(ds), world)), args.batch_size)
                               for ds in (val_ds, test_ds))

    if smoke:
        model = GPT(PRESETS[args.model])
    else:
        try:
            model = load_pretrained(args.model)
        except WeightsUnavailableError as e:
            raise WeightsUnavailableError(f"{e} {OFFLINE_HINT}") from None
    model.to_classifier(2)
    apply_method(model, args.method, args.rank, args.alpha, target=args.target, dropout=args.lora_dropout,
                 use_rslora=args.rslora)
    model.to(device)
    params = count_parameters(model)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.method]
    if main:
        print(f"{args.method} on {args.model} ({'random' if smoke else 'pretrained'} weights), {params}, "
              f"device {device}{f' x {world} processes' if world > 1 else ''}, lr {lr:g}")

    t0 = time.perf_counter()
    hist = train_classifier(train_model, train_loader, val_loader, epochs=args.epochs, lr=lr,
                            weight_decay=args.weight_decay, device=device, precision=args.precision)
    test = evaluate(train_model, test_loader, device)
    wall = time.perf_counter() - t0
    cfg = model.config
    metrics = {
        "smoke_numbers_mean_nothing": smoke,
        "model": args.model, "weights": args.weights, "method": args.method,
        # the exact base weights (None for random weights): source, hub commit, sha256 of the file
        "base_source": cfg.source, "base_revision": cfg.revision, "base_weights_sha256": cfg.weights_sha256,
        "rank": args.rank if args.method == "lora" else None, "alpha": args.alpha if args.method == "lora" else None,
        "lr": lr, "epochs": args.epochs, "batch_size_per_process": args.batch_size, "world_size": world,
        "max_length": max_length, "subset_per_class": args.subset, "seed": args.seed,
        "precision": _PRECISION_NAMES.get(hist.attrs["precision"], hist.attrs["precision"]),
        "precision_requested": args.precision,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "params_total": params.total, "params_trainable": params.trainable,
        "train_acc": hist["train_acc"].iloc[-1], "val_acc": hist["val_acc"].iloc[-1], "test_acc": test["accuracy"],
        "test_loss": test["loss"], "wall_s_with_eval": wall, "peak_mem_mb": float(hist["peak_mem_mb"].max()),
        "tokens_per_s": float(hist["tokens_per_s"].mean()),
    }
    if main:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "history.csv", lambda tmp: hist.to_csv(tmp, index=False))
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
        if args.method == "lora":
            save_adapter(model, out / "adapter", base_model=args.model, task="sms-spam")
        if not args.no_plot:
            from .plots import plot_history
            fig = plot_history(hist, title=f"{args.method} on {args.model}" + (" (SMOKE: meaningless)" if smoke else ""))
            fig.savefig(out / "curves.png", dpi=120, bbox_inches="tight")
        print(f"test accuracy {test['accuracy']:.1%}, wall time {wall:.1f}s (with evaluation); wrote {out}/")
        if smoke:
            print("(smoke run with random weights: these numbers mean nothing)")
    return {"metrics": metrics, "history": hist, "model": model}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        validate_args(args)  # before torch.distributed starts: a wrong argument is a usage message, at once
        run(args)
    except UsageError as e:
        parser.error(str(e))
    except (WeightsUnavailableError, WeightsIntegrityError) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank done before gloo/nccl is torn down
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
