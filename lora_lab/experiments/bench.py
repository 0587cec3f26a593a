"""Speed and memory of full fine-tuning vs LoRA, measured, with real GPT-2 shapes.

    python -m lora_lab.bench                                   # CPU default: tiny and gpt2, all methods
    python -m lora_lab.bench --shapes gpt2 gpt2-xl --device cuda
    python -m lora_lab.bench --quick                           # seconds: the CI configuration
    python -m lora_lab.bench --ddp-comm                        # bytes all-reduced per step, LoRA vs full

Weights are random (speed and memory do not depend on their values); the batches are real: the
balanced SMS-spam training split, batch 8, padded per batch, in the same seeded order for every
configuration. On CPU each configuration runs in a fresh subprocess so its peak memory is its own; on
CUDA in one process, with the peak counter reset and memory released between configurations. The
results file is rewritten (atomically) after every row, with ``"complete": false`` until the end.

Measured per configuration: median step time (forward + backward + AdamW step) after warm-up,
real tokens/s, peak memory (CUDA: peak bytes allocated; CPU: peak resident set size of the process,
which includes the ~0.3-0.5 GB of the Python/torch runtime, see ``baseline_rss_mb``), trainable
parameters, optimizer-state bytes, checkpoint bytes (adapter vs full), and the achieved model
FLOP/s (and MFU against the GPU's dense bf16 peak, on GPUs we know).
Results are written as JSON, one file per device, under ``benchmarks/``.

The file reads top to bottom: measuring one configuration (:func:`run_one`, :func:`inference_latency`,
:func:`end_to_end`), running many (:func:`measure`, :func:`run_all`), reporting (:func:`summary_table`,
:func:`ratios`, :func:`committed_results`), then the command line. DDP traffic (:func:`ddp_comm`) is measured
in :mod:`lora_lab.train.distributed` and re-exported here; the machine is named by
:func:`lora_lab.utils.machine.device_name`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ..data.sms import SpamDataset, make_loader, spam_splits
from ..lora.model import count_parameters, merge_lora, replace_linear_with_lora
from ..models.gpt2 import GPT, PRESETS
from ..train.distributed import ddp_comm
from ..train.loop import make_optimizer, train_step
from ..train.measure import checkpoint_bytes, latency_ms
from ..train.methods import apply_method, method_name, parse_method
from ..utils.files import write_json
from ..utils.machine import (
    cpu_flags,
    device_name,
    git_commit,
    peak_memory_bytes,
    pick_device,
    reset_peak_memory,
    set_seed,
    slug,
)
from ..utils.precision import make_grad_scaler, precision_for, precision_name
from .bench_results import committed_results, ratios, summary_table
from .finetune_job import FinetuneConfig, run
from .results import exit_on_results_error, read_results

__all__ = ["run_one", "run_all", "measure", "model_flops_per_step", "device_name", "ddp_comm",
           "inference_latency", "end_to_end", "committed_results", "summary_table", "ratios"]

# the table's rows by default; any lora-<rank> works (lora_lab.train.parse_method reads them)
DEFAULT_METHODS = ("full", "last-block", "lora-8", "lora-16", "lora-64")
# dense bf16 peak (no sparsity) from the vendors' data sheets, for MFU
PEAK_BF16_FLOPS = {"H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
                   "T4": 65e12}


# --- measuring ----------------------------------------------------------------------------------
def model_flops_per_step(cfg, batch_shape, method: str, rank: int | None) -> float:
    """Matmul FLOPs of one training step (the usual 2 FLOPs per multiply-add).

    Forward: ``2 * params_in_linears * tokens`` + attention ``4 * n_layer * B * T^2 * d``.
    Backward: gradients w.r.t. activations down to the first trainable layer (another forward's worth),
    and w.r.t. weights only for trainable ones - which is why LoRA's backward is cheaper than full
    fine-tuning's, and last-block's cheaper still (its backward stops after one block).
    """
    B, T = batch_shape
    d, L = cfg.n_embd, cfg.n_layer
    lin = L * 12 * d * d  # c_attn 3d^2 + c_proj d^2 + c_fc 4d^2 + mlp c_proj 4d^2
    fwd = 2 * lin * B * T + 4 * L * B * T * T * d
    if method == "full":
        return 3 * fwd
    if method == "last-block":  # frozen earlier blocks need no backward at all
        return fwd + 2 * fwd / L
    lora = 2 * L * rank * 16 * d * B * T  # rank*(in+out) per layer, summed: 16*d*rank per block
    return 2 * fwd + 3 * lora


def _rss_mb() -> float:
    """This process's resident set size now, in MiB (NaN where neither /proc nor psutil can say)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 2**20


def _random_classifier(shape: str, method: str, rank: int | None, device, seed: int):
    """A GPT-2 classifier of ``shape`` with random weights (speed and memory do not depend on their
    values), made trainable by ``method``; LoRA uses alpha = rank (scaling 1), rank 16 unless given."""
    import torch

    set_seed(seed)
    with torch.device(device):
        model = GPT(PRESETS[shape]).to_classifier(2)
    apply_method(model, method, rank or 16, rank or 16)
    return model.to(device).train()


def _time_steps(model, batches, opt, dev, amp, scaler, warmup: int) -> dict:
    """Run one training step per batch, timing each (GPU work synchronised); the first ``warmup`` steps are
    run but not kept. Returns the kept ``times`` (s), their ``tokens`` (real) and ``padded`` token counts and
    ``shapes``, and ``first_step`` (s), which includes compilation and allocator warm-up."""
    import torch

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    kept = {"times": [], "tokens": [], "padded": [], "shapes": [], "first_step": 0.0}
    for i, b in enumerate(batches):
        b = b.to(dev)
        sync()
        t0 = time.perf_counter()
        train_step(model, b, opt, dev, amp, scaler)
        sync()
        dt = time.perf_counter() - t0
        if i == 0:
            kept["first_step"] = dt
        if i >= warmup:
            kept["times"].append(dt)
            kept["tokens"].append(int(b.lengths.sum()))
            kept["padded"].append(b.input_ids.numel())
            kept["shapes"].append(tuple(b.input_ids.shape))
    return kept


def run_one(shape="tiny", method="lora-16", steps=20, warmup=5, device="cpu", precision="auto",
            compile=False, padding="bucket", batch_size=8, seed=123, data_dir=None) -> dict:
    """Measure one configuration in this process. Returns a flat dict (one row of the results table)."""
    import torch

    name, rank = parse_method(method)
    baseline_rss = _rss_mb()
    dev = torch.device(device)
    batches = _batches(seed, batch_size, padding, steps + warmup, data_dir)
    baseline_alloc = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    model = _random_classifier(shape, name, rank, dev, seed)
    params = count_parameters(model)
    fwd_model = torch.compile(model) if compile else model
    opt = make_optimizer(model, 1e-4)
    amp = precision_for(dev, precision)
    reset_peak_memory(dev)
    t = _time_steps(fwd_model, batches, opt, dev, amp, make_grad_scaler(dev, amp), warmup)
    times, total_s = t["times"], sum(t["times"])
    flops = sum(model_flops_per_step(PRESETS[shape], s, name, rank) for s in t["shapes"])
    opt_bytes = sum(x.numel() * x.element_size() for st in opt.state.values() for x in st.values()
                    if torch.is_tensor(x) and x.dim() > 0)
    row = {
        "shape": shape, "method": method_name(name, rank),
        "precision": precision_name(amp),
        "compile": compile, "padding": padding, "batch_size": batch_size, "steps": len(times),
        "step_ms_median": 1e3 * statistics.median(times), "step_ms_p10": 1e3 * sorted(times)[len(times) // 10],
        "step_ms_p90": 1e3 * sorted(times)[min(len(times) - 1, (9 * len(times)) // 10)],
        "first_step_ms": 1e3 * t["first_step"],
        "tokens_per_s": sum(t["tokens"]) / total_s, "padded_tokens_per_s": sum(t["padded"]) / total_s,
        "peak_mem_mb": (peak_memory_bytes(dev) - baseline_alloc) / 2**20,
        "baseline_rss_mb": baseline_rss if dev.type == "cpu" else None,
        "params_total": params.total, "params_trainable": params.trainable,
        "optimizer_state_mb": opt_bytes / 2**20, "checkpoint_mb": checkpoint_bytes(model, name) / 2**20,
        "achieved_tflops": flops / total_s / 1e12,
    }
    if dev.type == "cuda":
        gpu = device_name(dev)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in gpu), None)
        row["mfu"] = row["achieved_tflops"] * 1e12 / peak if peak else None
        row["baseline_alloc_mb"] = baseline_alloc / 2**20
        del model, fwd_model, opt
        _release_cuda(compile)
    return row


_BATCHES: dict = {}


def _batches(seed, batch_size, padding, n, data_dir):
    """The first ``n`` training batches in the seeded order (tokenised once per process)."""

    key = (seed, batch_size, padding, n, str(data_dir))
    if key not in _BATCHES:
        train_df, _, _ = spam_splits(data_dir, seed=seed)
        ds = SpamDataset(train_df)
        loader = make_loader(ds, batch_size, shuffle=True, drop_last=True, seed=seed, bucket=padding == "bucket",
                             pad_to=ds.longest if padding == "longest" else None)
        batches = []
        for b in loader:
            batches.append(b)
            if len(batches) == n:
                break
        _BATCHES[key] = batches
    return _BATCHES[key]


def _release_cuda(compiled: bool) -> None:
    """Give back what one in-process CUDA measurement allocated, so the next one starts from zero."""
    import gc

    import torch

    if compiled:
        torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def inference_latency(shape="gpt2", rank=16, device="cpu", iters=20, seed=123, data_dir=None) -> list[dict]:
    """Forward latency of one batch: plain base model vs LoRA unmerged vs LoRA merged."""
    import torch

    dev = torch.device(device)
    _, _, test_df = spam_splits(data_dir, seed=seed)
    batch = next(iter(make_loader(SpamDataset(test_df), 8))).to(dev)
    torch.manual_seed(seed)
    with dev:
        model = GPT(PRESETS[shape]).to_classifier(2).eval()
    rows = []

    def measure_as(variant):
        rows.append({"shape": shape, "variant": variant, "latency_ms": latency_ms(model, batch, reps=iters),
                     "batch_shape": list(batch.input_ids.shape)})

    measure_as("base model")
    replace_linear_with_lora(model, rank, rank)
    measure_as(f"LoRA r={rank} unmerged")
    merge_lora(model)
    measure_as(f"LoRA r={rank} merged")
    return rows


def end_to_end(shape="gpt2", methods=("lora", "full"), epochs=5, device="cpu") -> list[dict]:
    """Wall time of whole fine-tunes (train ``epochs`` epochs on the balanced split, evaluate every epoch,
    then test), through the same code as ``python -m lora_lab.finetune``, with random weights."""

    rows = []
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp:
            m = run(FinetuneConfig(model=shape, weights="random", method=method, epochs=epochs, device=device,
                                   out=tmp, plot=False))["metrics"]
        rows.append({"shape": shape, "method": method, "epochs": epochs, "wall_s_with_eval": m["wall_s_with_eval"],
                     "peak_mem_mb": m["peak_mem_mb"], "tokens_per_s": m["tokens_per_s"], "precision": m["precision"],
                     "bucket": m["bucket"]})
    return rows


# --- orchestration ------------------------------------------------------------------------------
def _in_subprocess(kwargs: dict, timeout=1800) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "lora_lab.bench", "--one", json.dumps(kwargs)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark {kwargs} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(config: dict) -> dict:
    """One row. On CPU in a fresh subprocess: the peak resident set size is a high-water mark over a
    process's whole life, so each configuration needs a process of its own. On CUDA in this process:
    the allocator's peak counter is reset per configuration and what the previous one held is released
    first (``baseline_alloc_mb`` records anything left), which saves a CUDA start-up per row."""
    if str(config.get("device", "cpu")).startswith("cuda"):
        return run_one(**config)
    return _in_subprocess(config)


def _configs(shapes, methods, device: str, ablations: bool) -> list[dict]:
    """Every shape x method in the default configuration (the precision ``auto`` picks here, batches of
    similar length: what training uses), then (``ablations``) each change on its own, on the largest shape,
    for full and LoRA r=16: random batches padded per batch (the old default) in that precision and in fp32,
    padded to the longest message, bf16 where ``auto`` picked fp32, and torch.compile last (it takes the
    longest and is the most likely to fail)."""
    import torch

    configs = [dict(shape=s, method=m) for s in shapes for m in methods]
    if ablations:
        s = shapes[-1]
        autocast = precision_for(torch.device(device), "auto") is not None
        for m in ("full", "lora-16"):
            configs.append(dict(shape=s, method=m, padding="batch"))
            if autocast:
                configs.append(dict(shape=s, method=m, padding="batch", precision="fp32"))
            else:
                configs.append(dict(shape=s, method=m, precision="bf16"))
            configs.append(dict(shape=s, method=m, padding="longest"))
        configs += [dict(shape=s, method=m, compile=True) for m in ("full", "lora-16")]
    return configs


def _header(device: str) -> dict:
    """What every results file records about where and how it was measured."""
    import torch

    return {
        "device": device_name(device), "device_type": device, "torch": torch.__version__,
        "cuda": torch.version.cuda, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": git_commit(), "python": platform.python_version(), "threads": torch.get_num_threads(),
        "cpu": {"name": device_name("cpu"), "flags": cpu_flags()},
        "note": "random weights; real SMS-spam batches of 8 (padding: bucket = similar lengths batched together, "
                "padded per batch; batch = random batches padded per batch; longest = all padded to the longest)",
        "complete": False, "results": [],
    }


def run_all(shapes, methods, *, device="cpu", steps=20, warmup=5, ablations=True, inference=True,
            comm=False, log=print, save=None) -> dict:
    """Measure every configuration; ``save(result)``, if given, is called after each row (with
    ``"complete": False``) and once at the end, so a run cut short still leaves what it measured."""
    for m in methods:
        parse_method(m)  # an unknown method stops here, not after an hour of measuring
    save = save or (lambda result: None)
    result = _header(device)
    for c in _configs(shapes, methods, device, ablations):
        c = {"device": device, "steps": steps, "warmup": warmup, "precision": "auto", "padding": "bucket", **c}
        t0 = time.perf_counter()
        row = measure(c)
        result["results"].append(row)
        log(f"{row['shape']:>11} {row['method']:>10} {row['precision']:>8} compile={row['compile']!s:5} "
            f"pad={row['padding']:7} step {row['step_ms_median']:8.1f} ms  {row['tokens_per_s']:9,.0f} tok/s  "
            f"peak {row['peak_mem_mb']:8.0f} MB  ({time.perf_counter() - t0:.0f}s)")
        save(result)
    if inference:
        result["inference"] = inference_latency(shapes[-1], device=device)
        save(result)
    if comm:
        result["ddp_comm"] = ddp_comm(shapes[-1])
    result["complete"] = True
    save(result)
    return result


# --- reporting ----------------------------------------------------------------------------------
def _print_report(result: dict) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:,.2f}".format):
        print(f"\n{result['device']}, torch {result['torch']}:")
        print(summary_table(result).to_string(index=False))
        print("\ninference:", pd.DataFrame(result["inference"]).to_string(index=False))
        if "end_to_end" in result:
            print("\nend to end:", pd.DataFrame(result["end_to_end"]).to_string(index=False))
        if "ddp_comm" in result:
            print("\nDDP:", pd.DataFrame(result["ddp_comm"]).to_string(index=False))
        print("\nLoRA-16 / full:", json.dumps(ratios(result), indent=1))


# --- command line -------------------------------------------------------------------------------
def _method_arg(text: str) -> str:
    try:
        return method_name(*parse_method(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lora_lab.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=None, help="default: tiny gpt2 on CPU; all sizes on CUDA")
    ap.add_argument("--methods", nargs="+", type=_method_arg, default=list(DEFAULT_METHODS),
                    help=f"full, last-block or lora-<rank> (default: {' '.join(DEFAULT_METHODS)})")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--ddp-comm", action="store_true", help="also measure DDP bytes per step (2 gloo processes)")
    ap.add_argument("--e2e", default=None, metavar="SHAPE",
                    help="also time 5-epoch LoRA and full fine-tunes with evaluation at this shape")
    ap.add_argument("--e2e-epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="seconds: tiny shape, full and lora-16, 3 steps (CI)")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/<device>.json)")
    ap.add_argument("--append", action="store_true",
                    help="add --e2e / --ddp-comm results to an existing --out file instead of measuring the table")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return ap


def _main_append(args, device: str) -> None:
    """``--append``: add end-to-end and/or DDP results to an existing results file."""
    import pandas as pd

    if not args.out or not Path(args.out).is_file():
        raise SystemExit("--append needs --out naming an existing results file")
    with exit_on_results_error("error: --append --out"):  # checked before anything is measured; never written over
        result = read_results(args.out)
    if args.e2e:
        result["end_to_end"] = end_to_end(args.e2e, epochs=args.e2e_epochs, device=device)
        result["end_to_end_commit"] = git_commit()
    if args.ddp_comm:
        result["ddp_comm"] = ddp_comm(args.shapes[-1] if args.shapes else "gpt2")
    write_json(args.out, result)
    for key in ("end_to_end", "ddp_comm"):
        if key in result:
            print(key, pd.DataFrame(result[key]).to_string(index=False), sep="\n")
    print(f"updated {args.out}")


def _main_measure(args, device: str) -> None:
    """The table (and optionally end-to-end runs), saved after every row, then printed."""
    if args.quick:
        shapes, methods, steps, warmup, abl = ["tiny"], ["full", "lora-16"], 3, 1, False
    else:
        shapes = args.shapes or (["tiny", "gpt2"] if device == "cpu" else
                                 ["tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
        methods, steps, warmup, abl = args.methods, args.steps, args.warmup, not args.no_ablations
    out = Path(args.out or f"benchmarks/{device.split(':')[0]}-{slug(device_name(device))}.json")
    result = run_all(shapes, methods, device=device, steps=steps, warmup=warmup, ablations=abl,
                     comm=args.ddp_comm, inference=True, save=lambda r: write_json(out, r))
    if args.e2e:
        result["complete"] = False
        result["end_to_end"] = end_to_end(args.e2e, epochs=args.e2e_epochs, device=device)
        result["complete"] = True
        write_json(out, result)
    _print_report(result)
    print(f"wrote {out}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.one:  # one configuration, in this (fresh) process: what measure() runs per CPU row
        print(json.dumps(run_one(**json.loads(args.one))))
        return

    device = str(args.device or pick_device())
    (_main_append if args.append else _main_measure)(args, device)


if __name__ == "__main__":
    main()
