"""CPU threads that wait politely: why one training cell can run 10x slower when another program is busy.

PyTorch's CPU kernels split each operation across threads with OpenMP (GNU libgomp in the Linux wheels)
and then wait at a barrier until every thread is done. By default a waiting libgomp thread *spins*
(keeps the core busy checking) for a while before it sleeps, which is fastest on an idle machine. But on a
laptop or a 2-core VM where another process also computes, there are more busy threads than cores: the
spinning threads burn the time slices their partner needs to finish, every barrier waits for a thread the
scheduler has parked, and a fine-tuning that took a minute alone can take ten.

``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once and hand the core over. It is a trade, measured
here (``python -m lora_lab.threads``: 30 MiniLM LoRA steps, Intel Xeon with 2 cores): with libgomp's default,
3.0 s alone and 18.9 s beside one busy process (6.2x slower); with PASSIVE, 4.6 s alone (1.5x slower than the
default) and 5.6 s beside the busy process (1.2x). So it is not the default: on a machine you share (a laptop
running other things, a CI box running tests beside each other) set ``OMP_WAIT_POLICY=PASSIVE`` in the shell,
or ``LORA_LAB_THREADS=polite`` and :func:`configure` (run by ``import lora_lab``) sets it. libgomp reads it once,
when it is loaded - that is, when ``torch`` is first imported - so it only takes effect if ``lora_lab`` is
imported before ``torch`` (or the variable is set in the shell). Whatever you set yourself
(``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``, ``torch.set_num_threads``) is left alone. The tests set it
(``tests/conftest.py``): there robustness beats the last 1.5x.

``TOKENIZERS_PARALLELISM=false`` stops Hugging Face's fast tokenizers (the MiniLM track) from starting
their own thread pool, which would compete with PyTorch's threads (and warns on stderr after a fork).

Measure it on your machine (about two minutes)::

    python -m lora_lab.threads
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

__all__ = ["DEFAULTS", "configure", "contention"]

DEFAULTS = {"TOKENIZERS_PARALLELISM": "false"}
POLITE = {"OMP_WAIT_POLICY": "PASSIVE"}  # with LORA_LAB_THREADS=polite


def configure(environ=None) -> dict:
    """Set :data:`DEFAULTS` (and with ``LORA_LAB_THREADS=polite`` also :data:`POLITE`) in ``environ``
    (``os.environ``) where the user has not set them; returns what it set.

    ``OMP_WAIT_POLICY`` is only set while ``torch`` is not imported yet (afterwards it would have no
    effect and would misreport the process's state); ``LORA_LAB_THREADS=keep`` turns all of this off.
    """
    env = os.environ if environ is None else environ
    mode = env.get("LORA_LAB_THREADS", "")
    if mode == "keep":
        return {}
    applied = {}
    for key, value in {**DEFAULTS, **(POLITE if mode == "polite" else {})}.items():
        if key in env or (key == "OMP_WAIT_POLICY" and "torch" in sys.modules):
            continue
        env[key] = value
        applied[key] = value
    return applied


def _workload(steps: int) -> dict:
    """A fixed piece of real fine-tuning: ``steps`` LoRA training steps of the offline MiniLM classifier (the
    heaviest thing the CPU course does), or of GPT-2 124M shapes with random weights where MiniLM is absent."""
    import torch

    from .data import spam_splits
    from .methods import apply_method
    from .train import make_optimizer, set_seed, train_step

    try:
        from .settings import get_settings, load_backbone

        bb = load_backbone(get_settings("offline", quiet=True), verbose=False)
        name = "all-MiniLM-L6-v2"
    except ImportError:
        from .settings import get_settings, load_backbone

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
    from .nbtools import machine

    print(machine("cpu"))
    print(json.dumps(contention(args.steps), indent=1))


if __name__ == "__main__":
    main()
