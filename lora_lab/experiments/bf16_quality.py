"""Does training in bf16 change the result? The same fine-tunes in fp32 and bf16, paired by seed, judged by the
course's one paired rule (``python -m lora_lab.precision``)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..utils.machine import cpu_flags, device_name, slug
from ..utils.plots import style
from ..utils.precision import cpu_autocast_dtype, cpu_has_native_bf16, probe_cpu_bf16
from .profiles import get_settings, load_backbone, load_splits
from .results import ResultsFile, exit_on_results_error, read_results
from .runs import finetune

__all__ = ["quality_check"]


# --- the quality check the default rests on -------------------------------------------------------------------
def quality_check(out, seeds=(123, 124, 125), methods=("lora", "full"),
                  precisions=("fp32", "bf16", "bf16+bucket"), log=print, command: str = "quality_check()") -> dict:
    """Fine-tune the offline model (all-MiniLM-L6-v2, full balanced split, the offline profile's settings) once
    per method x precision x seed; record test accuracy and loss, the per-epoch curves, time and tokens/s.
    A precision ending in ``+bucket`` also batches messages of similar length together
    (:mod:`lora_lab.data.bucketing`), the other proposed CPU default.

    The results file is rewritten (atomically) after every run and runs already in it are skipped, so an
    interrupted check resumes. Runs alternate precisions for each seed, so a machine that slows down midway
    hits both formats alike.
    """

    file = ResultsFile(out, {
        "what": "fp32 vs bf16 autocast on CPU: offline profile (all-MiniLM-L6-v2), full balanced split",
        "cpu": device_name("cpu"), "flags": cpu_flags(), "torch": torch.__version__,
        "threads": torch.get_num_threads()}, key=lambda r: (r["method"], r["precision_asked"], r["seed"]))
    S = get_settings("offline", quiet=True)
    bb = load_backbone(S, verbose=False)
    train_ds, val_ds, test_ds = bb.datasets(*load_splits(S))  # notebook 5's split, loaders and settings
    val_loader, test_loader = bb.loader(val_ds, S.batch_size), bb.loader(test_ds, S.batch_size)
    done = file.done()
    if any((m, p, s) not in done for s in seeds for m in methods for p in precisions):  # a launch that runs
        file.record_launch(command)
    for seed in seeds:
        for method in methods:
            for prec in precisions:
                if (method, prec, seed) in done:
                    continue
                t0 = time.perf_counter()
                r = finetune(bb, method, train_ds, val_loader, test_loader, seed=seed, epochs=S.epochs,
                             batch_size=S.batch_size, precision=prec.removesuffix("+bucket"),
                             bucket=prec.endswith("+bucket"))
                row = {"method": method, "precision_asked": prec, "precision": r["precision"], "seed": seed,
                       "test_acc": r["test_acc"], "test_loss": r["test_loss"], "val_acc": r["val_acc"],
                       "train_s": r["train_s"], "wall_s": time.perf_counter() - t0, "tokens_per_s": r["tokens_per_s"],
                       "curves": r["hist"][["epoch", "train_loss", "val_loss", "val_acc"]].to_dict("list")}
                file.add(row)
                log(f"{method:>4} {prec} seed {seed}: test {row['test_acc']:.2%} loss {row['test_loss']:.3f} "
                    f"train {row['train_s']:.0f}s {row['tokens_per_s']:,.0f} tok/s")
    return file.data


def quality_table(result: dict):
    """Per method and precision: mean, min and max test accuracy and loss over seeds, and mean training time."""
    import pandas as pd

    df = pd.DataFrame(result["runs"])
    g = df.groupby(["method", "precision_asked"])
    return pd.DataFrame({"seeds": g["seed"].count(), "test_acc_mean": g["test_acc"].mean(),
                         "test_acc_min": g["test_acc"].min(), "test_acc_max": g["test_acc"].max(),
                         "test_loss_mean": g["test_loss"].mean(), "train_s_mean": g["train_s"].mean(),
                         "tokens_per_s_mean": g["tokens_per_s"].mean()}).reset_index()


def quality_figure(result: dict):
    """Validation loss per epoch for every run (left: LoRA, right: full), one colour per precision, and the
    test accuracy of each run as dots: the picture of "does bf16 (or bucketing) change the training?"."""
    import matplotlib.pyplot as plt

    style()
    colors = {"fp32": "tab:blue", "bf16": "tab:orange", "bf16+bucket": "tab:green"}
    methods = sorted({r["method"] for r in result["runs"]}, key=["lora", "full"].index)
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(5 * (len(methods) + 1), 3.8))
    for ax, method in zip(axes, methods):
        for r in (r for r in result["runs"] if r["method"] == method):
            c = r["curves"]
            ax.plot(c["epoch"], c["val_loss"], "o-", color=colors.get(r["precision_asked"]), alpha=0.7,
                    label=r["precision_asked"] if r["seed"] == 123 else None)
        seeds = len({r["seed"] for r in result["runs"] if r["method"] == method})
        ax.set(title=f"{method}: validation loss per epoch ({seeds} seeds)", xlabel="epoch", ylabel="loss",
               xticks=sorted({e for r in result["runs"] for e in r["curves"]["epoch"]}))
        ax.legend()
    ax = axes[-1]
    for i, method in enumerate(methods):
        for j, prec in enumerate(colors):
            accs = [100 * r["test_acc"] for r in result["runs"]
                    if r["method"] == method and r["precision_asked"] == prec]
            ax.plot([i * 4 + j] * len(accs), accs, "o", color=colors[prec], label=prec if i == 0 else None)
    ax.set_xticks([1, 5], methods)
    ax.set(title="test accuracy of each run", ylabel="%")
    ax.legend()
    fig.suptitle(f"fp32 vs bf16 autocast on {result['cpu']}, all-MiniLM-L6-v2", y=1.02)
    fig.tight_layout()
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lora_lab.precision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="fp32 vs bf16 fine-tunes of the offline model (minutes per run)")
    q.add_argument("--out", default=None, help="default benchmarks/bf16-quality-<cpu>.json")
    q.add_argument("--seeds", type=int, nargs="+", default=[123, 124, 125])
    q.add_argument("--methods", nargs="+", default=["lora", "full"])
    sub.add_parser("probe", help="this CPU's bf16 capability and the measured probe")
    rep = sub.add_parser("report", help="the table and figure of a quality-check file")
    rep.add_argument("file")
    args = ap.parse_args(argv)
    if args.cmd == "probe":
        native = cpu_has_native_bf16()
        print(f"{device_name('cpu')}: native bf16 {'yes' if native else 'no'}")
        if native:
            print(json.dumps(probe_cpu_bf16(), indent=1))
        print(f"precision='auto' on this CPU: {cpu_autocast_dtype() or 'fp32'}")
        return
    if args.cmd == "report":
        with exit_on_results_error():
            res = read_results(args.file, "runs")
        print(quality_table(res).to_string(index=False))
        png = Path(args.file).with_suffix(".png")
        quality_figure(res).savefig(png, dpi=110, bbox_inches="tight")
        print(f"wrote {png}")
        return
    out = Path(args.out or f"benchmarks/bf16-quality-{slug(device_name('cpu'))}.json")
    command = "python -m lora_lab.precision " + " ".join(sys.argv[1:] if argv is None else argv)
    with exit_on_results_error():  # corrupt, truncated or foreign --out: it is left as it was
        res = quality_check(out, seeds=tuple(args.seeds), methods=tuple(args.methods), command=command)
    print(quality_table(res).to_string(index=False))
    print(f"wrote {out}")
