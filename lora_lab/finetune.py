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
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from .data import SpamDataset, get_tokenizer, make_loader, spam_splits
from .files import atomic_write
from .gpt2 import GPT, PRESETS, load_pretrained
from .lora import (count_parameters, mark_only_lora_trainable, mark_trainable, replace_linear_with_lora,
                   save_adapter)
from .settings import SMOKE_BANNER
from .train import evaluate, pick_device, set_seed, train_classifier

METHODS = ("lora", "full", "last-block")
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5, "last-block": 5e-5}


def apply_method(model: GPT, method: str, rank: int = 16, alpha: float = 16, *, target="all",
                 dropout: float = 0.0, use_rslora: bool = False) -> GPT:
    """Make a classifier trainable by one of three methods.

    * ``full``: every parameter.
    * ``last-block``: the last transformer block, the final LayerNorm and the head (the textbook baseline).
    * ``lora``: LoRA on the chosen Linear layers, plus the new head; everything else frozen.
    """
    if method == "full":
        model.requires_grad_(True)
    elif method == "last-block":
        model.requires_grad_(False)
        mark_trainable(model, [f"transformer.h.{model.config.n_layer - 1}", "transformer.ln_f", "classifier"])
    elif method == "lora":
        replace_linear_with_lora(model, rank, alpha, target=target, dropout=dropout, use_rslora=use_rslora)
        mark_only_lora_trainable(model, extra=["classifier"])
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return model


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
    ap.add_argument("--target", default="all", help="all, attention or mlp")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8, help="per process")
    ap.add_argument("--lr", type=float, default=None, help="default: 5e-4 for lora, 5e-5 otherwise")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--max-length", type=int, default=None, help="truncate messages to this many tokens")
    ap.add_argument("--subset", type=int, default=None, help="keep this many messages per class (quick runs)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/finetune")
    ap.add_argument("--no-plot", action="store_true")
    return ap


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


def run(args) -> dict:
    rank, world, device = _dist_setup(args.device)
    main = rank == 0
    smoke = args.weights == "random"
    if main and smoke:
        print(SMOKE_BANNER)
    set_seed(args.seed)

    train_df, val_df, test_df = spam_splits(args.data_dir, seed=args.seed, per_class=args.subset)
    tok = get_tokenizer()
    train_ds, val_ds, test_ds = (SpamDataset(d, tok, args.max_length) for d in (train_df, val_df, test_df))
    train_loader = make_loader(train_ds, args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                               num_replicas=world, rank=rank)
    # evaluation: each rank takes every world-th example (no padding duplicates), sums are all-reduced
    val_loader, test_loader = (make_loader(Subset(ds, range(rank, len(ds), world)), args.batch_size)
                               for ds in (val_ds, test_ds))

    if smoke:
        if args.model not in PRESETS:
            raise SystemExit(f"--weights random needs a preset --model ({sorted(PRESETS)}), got {args.model}")
        model = GPT(PRESETS[args.model])
    else:
        model = load_pretrained(args.model)
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
    metrics = {
        "smoke_numbers_mean_nothing": smoke,
        "model": args.model, "weights": args.weights, "method": args.method,
        "rank": args.rank if args.method == "lora" else None, "alpha": args.alpha if args.method == "lora" else None,
        "lr": lr, "epochs": args.epochs, "batch_size_per_process": args.batch_size, "world_size": world,
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
    args = build_parser().parse_args(argv)
    try:
        run(args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank done before gloo/nccl is torn down
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
