"""How much a busy machine slows training, measured: 30 MiniLM LoRA steps alone and beside a busy process,
with libgomp's default waiting and with ``OMP_WAIT_POLICY=PASSIVE`` (``python -m lora_lab.threads``). Why it
happens, and the setting, are in :mod:`lora_lab.utils.threads`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ..data.sms import spam_splits
from ..train.loop import make_optimizer, train_step
from ..train.methods import apply_method
from ..utils.machine import machine, set_seed
from ..utils.threads import DEFAULTS, POLITE
from .profiles import get_settings, load_backbone

__all__ = ["contention"]


def _workload(steps: int) -> dict:
    """A fixed piece of real fine-tuning: ``steps`` LoRA training steps of the offline MiniLM classifier (the
    heaviest thing the CPU course does), or of GPT-2 124M shapes with random weights where MiniLM is absent."""
    import torch

    try:
        bb = load_backbone(get_settings("offline", quiet=True), verbose=False)
        name = "all-MiniLM-L6-v2"
    except ImportError:
        bb = load_backbone(get_settings("smoke", quiet=True), verbose=False)
        name = "tiny GPT-2"
    train_df, _, _ = spam_splits(seed=123)
    (ds,) = bb.datasets(train_df)
    set_seed(123)
    model = apply_method(bb.classifier(), "lora", 16, 16)
    opt = make_optimizer(model, 1e-3)
    batches = [b for _, b in zip(range(steps + 2), bb.loader(ds, 8, shuffle=True))]
    dev = torch.device("cpu")
    for b in batches[:2]:  # warm-up
        train_step(model, b, opt, dev)
    t0 = time.perf_counter()
    for b in batches[2:]:
        train_step(model, b, opt, dev)
    return {"model": name, "steps": steps, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}


def _spawn(env_extra: dict, steps: int) -> subprocess.Popen:
    env = {**os.environ, "LORA_LAB_THREADS": "keep", "PYTHONWARNINGS": "ignore", **env_extra}
    for key in {**DEFAULTS, **POLITE}:
        if key not in env_extra:
            env.pop(key, None)
    return subprocess.Popen([sys.executable, "-m", "lora_lab.threads", "--workload", str(steps)], env=env,
                            stdout=subprocess.PIPE, text=True)


def _timed(env_extra: dict, steps: int, competitors: int) -> float:
    others = [_spawn(env_extra, 10 * steps) for _ in range(competitors)]
    if others:
        time.sleep(8)  # let the competitors load their model and start computing
    me = _spawn(env_extra, steps)
    out = json.loads(me.communicate()[0].strip().splitlines()[-1])
    for p in others:
        p.kill()
        p.wait()
    return out["seconds"]


def contention(steps: int = 30, log=print) -> list[dict]:
    """The same ``steps`` training steps alone and beside one identical busy process, with libgomp's default
    waiting and with ``OMP_WAIT_POLICY=PASSIVE``. Returns one row per setting (seconds)."""
    rows = []
    for label, env in (("default (spin, then sleep)", {}), ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"})):
        alone = _timed(env, steps, 0)
        busy = _timed(env, steps, 1)
        rows.append({"waiting": label, "alone_s": alone, "beside_a_busy_process_s": busy, "slowdown": busy / alone})
        if log:
            log(f"{label:28} alone {alone:6.1f} s | beside a busy process {busy:6.1f} s ({busy / alone:.1f}x)")
    return rows


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lora_lab.threads", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workload", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.workload is not None:
        print(json.dumps(_workload(args.workload)))
        return

    print(machine("cpu"))
    print(json.dumps(contention(args.steps), indent=1))


if __name__ == "__main__":
    main()
