"""CPU threads that wait politely: why one training cell can run 10x slower when another program is busy.

PyTorch's CPU kernels split each operation across threads with OpenMP (GNU libgomp in the Linux wheels)
and then wait at a barrier until every thread is done. By default a waiting libgomp thread *spins*
(keeps the core busy checking) for a while before it sleeps, which is fastest on an idle machine. But on a
laptop or a 2-core VM where another process also computes, there are more busy threads than cores: the
spinning threads burn the time slices their partner needs to finish, every barrier waits for a thread the
scheduler has parked, and a fine-tuning that took a minute alone can take ten.

``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once and hand the core over. It is a trade, measured
by :mod:`lora_lab.experiments.contention` (``python -m lora_lab.threads``: 30 MiniLM LoRA steps, Intel Xeon
with 2 cores): with libgomp's default,
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

import os
import sys

__all__ = ["DEFAULTS", "configure"]


DEFAULTS = {"TOKENIZERS_PARALLELISM": "false"}


POLITE = {"OMP_WAIT_POLICY": "PASSIVE"}  # with LORA_LAB_THREADS=polite


def configure(environ=None) -> dict:
    """Set :data:`DEFAULTS` (and with ``LORA_LAB_THREADS=polite`` also :data:`POLITE`) in ``environ``
    (``os.environ``) where the user has not set them; returns what it set.

    ``OMP_WAIT_POLICY`` is only set while ``torch`` is not imported yet (afterwards it would have no
    effect and would misreport the process's state); ``LORA_LAB_THREADS=keep`` turns all of this off.
    """
    env = os.environ if environ is None else environ
    mode = env.get("LORA_LAB_THREADS", "").strip().lower()
    if mode not in ("", "keep", "polite"):
        raise ValueError(f"LORA_LAB_THREADS={mode!r} is not one of 'polite' or 'keep': fix or unset it (polite: "
                         "waiting OpenMP threads sleep at once; keep: lora_lab sets no thread variables)")
    if mode == "keep":
        return {}
    applied = {}
    for key, value in {**DEFAULTS, **(POLITE if mode == "polite" else {})}.items():
        if key in env or (key == "OMP_WAIT_POLICY" and "torch" in sys.modules):
            continue
        env[key] = value
        applied[key] = value
    return applied
