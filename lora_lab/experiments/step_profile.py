"""Where one LoRA training step spends its time: ``python -m lora_lab.experiments.step_profile``.

The CPU-speed work asked why a MiniLM LoRA fine-tune takes about 50 s on 2 cores and not 30 s. This answers with
``torch.profiler``: it trains a few warm-up steps, then records the next ``--steps`` steps exactly as
:func:`lora_lab.train.train_step` runs them (the profile's model, LoRA rank 16 on every Linear layer of the body,
AdamW, the precision the lessons use), and groups the operators' *self* CPU time into kinds that map onto the
levers one could pull:

* ``matmul``: the matrix products (frozen weights and LoRA's ``A``, ``B`` alike): the floor;
* ``casts``: copies between fp32 and bf16 that autocast makes (it caches casts only of weights that train, so
  every frozen weight is cast again on every forward): a lever (store frozen weights in bf16);
* ``dropout``: drawing the dropout masks (MiniLM's own dropout layers, active in training): a lever;
* ``optimizer``: AdamW's update; ``elementwise``, ``softmax/norm/gelu``, ``other``: the rest.

The result, with the machine, precision, batch shape and commit, goes to a JSON file (``--out``).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from ..train.loop import make_optimizer, train_step
from ..train.methods import apply_method
from ..utils.files import write_json
from ..utils.machine import git_commit, machine, set_seed
from ..utils.precision import precision_for, precision_name
from .profiles import PROFILES, get_settings, load_backbone, load_splits

__all__ = ["KINDS", "kind_of", "profile_steps", "main"]

# operator name fragments -> kind; the first match wins, so the more specific come first
KINDS = (("dropout", ("bernoulli", "dropout")),
         ("optimizer", ("_foreach_", "adam")),
         ("casts", ("copy_", "_to_copy", "::to")),
         ("matmul", ("::mm", "addmm", "bmm", "::matmul", "::linear", "baddbmm")),
         ("softmax/norm/gelu", ("softmax", "layer_norm", "gelu", "tanh")),
         ("elementwise", ("::mul", "::add", "::div", "::sub", "::where", "masked_fill", "::fill_", "::zero_")))


def kind_of(op: str) -> str:
    """The kind an operator name (``aten::addmm``) belongs to."""
    name = op.lower()
    return next((kind for kind, parts in KINDS if any(p in name for p in parts)), "other")


def profile_steps(settings, *, steps: int = 20, warmup: int = 5, rank: int = 16, precision: str = "auto") -> dict:
    """Profile ``steps`` LoRA training steps on the CPU (after ``warmup`` unrecorded ones). Returns a JSON-able dict:
    mean step time, the share of self CPU time per kind and for the top operators, and what was measured."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cpu")
    set_seed(settings.seed)
    bb = load_backbone(settings, device, verbose=False)
    train, _, _ = load_splits(settings)
    (train_ds,) = bb.datasets(train)
    loader = bb.loader(train_ds, settings.batch_size, shuffle=True, seed=settings.seed)
    batches = [b.to(device) for _, b in zip(range(warmup + steps), loader)]
    if len(batches) < warmup + steps:
        raise ValueError(f"the training split has {len(batches)} batches, fewer than --warmup + --steps "
                         f"({warmup + steps}): ask for fewer steps")
    model = apply_method(bb.classifier(device=device), "lora", rank, rank)
    model.train()
    opt = make_optimizer(model, bb.lr["lora"])
    amp = precision_for(device, precision)
    for b in batches[:warmup]:
        train_step(model, b, opt, device, amp)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[warmup:]:
            train_step(model, b, opt, device, amp)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    kinds = defaultdict(float)
    for e in events:
        kinds[kind_of(e.key)] += e.self_cpu_time_total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    tokens = [int(b.input_ids.numel()) for b in batches[warmup:]]
    return {"schema": "lora_lab.step_profile/1", "machine": machine(device), "torch": torch.__version__,
            "commit": git_commit(), "model": bb.name, "profile": settings.profile, "method": f"lora r{rank}",
            "precision": precision_name(amp), "batch_size": settings.batch_size, "steps": steps, "warmup": warmup,
            "mean_tokens_per_batch": sum(tokens) / len(tokens),
            "mean_step_ms_profiled": 1000 * wall / steps,
            "note": "times under the profiler run a little slower than without it; shares are of self CPU time",
            "kinds": {k: round(v / total, 4) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_ops": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls_per_step":
                         e.count / steps, "kind": kind_of(e.key)} for e in top]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora_lab.experiments.step_profile", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=PROFILES, default="offline")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", help="JSON file to write (default: print only)")
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0:
        p.error(f"--steps must be 1 or more and --warmup 0 or more, got {a.steps} and {a.warmup}")
    res = profile_steps(get_settings(a.profile, quiet=True), steps=a.steps, warmup=a.warmup)
    print(f"{res['model']} {res['method']}, {res['precision']}, {res['machine']}: "
          f"{res['mean_step_ms_profiled']:.0f} ms per step (profiled), {res['mean_tokens_per_batch']:.0f} tokens/batch")
    for k, v in res["kinds"].items():
        print(f"  {k:<18} {v:6.1%}")
    if a.out:
        write_json(Path(a.out), res, indent=1)
        print("written to", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
