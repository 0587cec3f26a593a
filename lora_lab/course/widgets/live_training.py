"""Notebook 4's live training view: curves redrawn as batches finish, and a Stop button that ends training
cleanly after the current batch (ipykernel 6 and 7)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from html import escape

import numpy as np
from matplotlib.figure import Figure

from ...train.loop import train_classifier
from .display import (
    NO_STOP_HINT,
    Report,
    display_output,
    has_widgets,
    in_kernel,
    ipywidgets_module,
    live_frontend,
    new_figure,
)

__all__ = ["TrainingCurves", "draw_training", "LiveTraining", "ui_event_poller"]


@dataclass
class TrainingCurves:
    """What the live view has seen: one point per optimizer step, one row per finished epoch."""

    steps: list = field(default_factory=list)  # (step number overall, batch loss, batch accuracy)
    epochs: list = field(default_factory=list)  # rows of train_classifier's history
    steps_per_epoch: int | None = None

    def add(self, info) -> None:
        """Record one ``train_classifier`` callback ``info``."""
        self.steps_per_epoch = info.steps
        per = info.steps or 0
        self.steps.append(((info.epoch - 1) * per + info.step, float(info.loss), float(info.acc)))
        if len(info.history) > len(self.epochs):
            self.epochs = list(info.history)


def _smooth(y, n: int = 10) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if len(y) == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - n, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def draw_training(curves: TrainingCurves, title: str = "training", status: str = "") -> Figure:
    """Loss and accuracy: every batch (faint), a running mean over 10 batches, and validation after each epoch."""
    fig, (a1, a2) = new_figure(12, 4.2, 2)
    if curves.steps:
        s, loss, acc = map(np.asarray, zip(*curves.steps))
        a1.plot(s, loss, color="tab:blue", alpha=0.25, lw=1)
        a1.plot(s, _smooth(loss), color="tab:blue", label="train (mean of 10 batches)")
        a2.plot(s, 100 * _smooth(acc), color="tab:blue", label="train (mean of 10 batches)")
    per = curves.steps_per_epoch
    if curves.epochs and per:
        x = [r["epoch"] * per if r["epoch"] * per <= (curves.steps[-1][0] if curves.steps else 0) else
             curves.steps[-1][0] for r in curves.epochs]
        a1.plot(x, [r["val_loss"] for r in curves.epochs], "o--", color="tab:orange", ms=8, label="validation")
        a2.plot(x, [100 * r["val_acc"] for r in curves.epochs], "o--", color="tab:orange", ms=8, label="validation")
    a1.set(xlabel="optimizer step", ylabel="cross-entropy (nats)", title="loss")
    a2.set(xlabel="optimizer step", ylabel="accuracy (%)", title="accuracy", ylim=(0, 101))
    for a in (a1, a2):
        if a.lines:
            a.legend(fontsize=10)
    fig.suptitle(title + (f"\n{status}" if status else ""), fontsize=12)
    return fig


def _ipykernel_major() -> int | None:
    try:
        import ipykernel
    except ImportError:
        return None
    try:
        return int(str(ipykernel.__version__).split(".")[0])
    except ValueError:
        return None


def ui_event_poller():
    """How the Stop button's click reaches the kernel while a cell trains: ``(events, why)``.

    A click is a comm message on the kernel's shell channel. ipykernel 7 handles it while the cell ``await``s
    (``events`` is None: nothing to do). ipykernel 6 (Colab has 6.17.1) queues it behind the running cell, so
    the cell must hand it over itself: ``events`` is jupyter-ui-poll's ``ui_events()``, an async context whose
    ``await poll(n)`` processes up to n waiting messages (execute requests of later cells are held back and run
    after this cell). ``why`` is None when a Stop button can work, else the reason it cannot (no jupyter-ui-poll)."""
    major = _ipykernel_major()
    if not in_kernel() or major is None or major >= 7:
        return None, None
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:
        return None, f" (ipykernel {major} needs jupyter-ui-poll for it: pip install jupyter-ui-poll)"
    return ui_events(), None


class LiveTraining:
    """Train with :func:`lora_lab.train.train_classifier` while one figure of loss and accuracy grows in place,
    with a Stop button that ends training cleanly after the current batch (the history so far is kept and
    returned; ``hist.attrs["stopped_early"]`` says so).

    In a notebook: ``hist = await LiveTraining(title).train(model, loader, val_loader, epochs=3, lr=1e-3)``.
    The ``await`` is what lets the notebook hear the Stop button while training runs: training runs in a
    background thread, and the cell waits without blocking the kernel. Outside a live notebook (a script, CI,
    nbval, ``make execute``: see :func:`live_frontend`) it simply calls ``train_classifier``, whose printed
    progress is the output, and returns the same history. The kernel's interrupt (■) also stops cleanly.
    """

    def __init__(self, title: str = "training", redraw_every_s: float = 1.0, live: bool | None = None):
        self.title, self.redraw_every_s = title, redraw_every_s
        self.live = live_frontend() if live is None else live
        self.curves = TrainingCurves()
        self.stop_requested = threading.Event()
        self.status = ""
        self.handle = None
        self.button = None
        self.redraws = 0

    def request_stop(self, *_) -> None:
        """What the Stop button does: training ends after the batch it is on."""
        self.stop_requested.set()
        if self.button is not None:
            self.button.description, self.button.disabled = "stopping after this batch…", True

    def callback(self, info) -> bool:
        """The ``train_classifier`` callback: record the step; True asks it to stop."""
        self.curves.add(info)
        self.status = (f"epoch {info.epoch}/{info.epochs}, batch {info.step}/{info.steps}: "
                       f"loss {info.loss:.3f}")
        return self.stop_requested.is_set()

    def figure(self) -> Figure:
        return draw_training(self.curves, self.title, self.status)

    def _redraw(self) -> None:
        self.redraws += 1
        if self.handle is not None:
            self.handle.update(self.figure())

    async def train(self, model, train_loader, val_loader=None, **kwargs):
        """Train as ``train_classifier(model, train_loader, val_loader, **kwargs)`` does and return its history."""

        if not self.live:
            return train_classifier(model, train_loader, val_loader, **kwargs)
        w = ipywidgets_module()
        kwargs.setdefault("progress", False)  # the figure is the progress bar
        log_lines = []
        kwargs["log"] = log_lines.append
        events, why = ui_event_poller() if has_widgets(w) else (None, " (ipywidgets is not installed)")
        self.status = "starting…"
        self.handle = display_output(self.figure(), display_id=True)
        if why is None:
            self.button = w.Button(description="Stop after this batch", button_style="danger", icon="stop")
            self.button.on_click(self.request_stop)
            display_output(self.button)
        else:
            self.button = None
            hint = NO_STOP_HINT.format(why=why)
            display_output(Report(f'<div style="color:#555"><i>{escape(hint)}</i></div>', hint))
        result, error = {}, {}

        def work():
            try:
                result["hist"] = train_classifier(model, train_loader, val_loader, callback=self.callback, **kwargs)
            except BaseException as e:  # re-raised in the notebook's thread below
                error["e"] = e

        worker = threading.Thread(target=work, name="lora_lab-training", daemon=True)
        worker.start()
        last = time.perf_counter()
        try:
            async with (events or contextlib.nullcontext()) as poll:
                while worker.is_alive():
                    await asyncio.sleep(0.05)
                    if poll is not None:  # ipykernel < 7: hand the kernel the button's click (a comm message)
                        await poll(10)
                    if time.perf_counter() - last >= self.redraw_every_s:
                        self._redraw()
                        last = time.perf_counter()
        except (asyncio.CancelledError, KeyboardInterrupt):  # the kernel's interrupt: stop cleanly, keep the history
            self.request_stop()
            while worker.is_alive():
                worker.join(0.05)
        if "e" in error:
            if self.button is not None:
                self.button.disabled = True
            raise error["e"]
        hist = result["hist"]
        self.curves.epochs = hist.to_dict("records")
        done = f"stopped early in epoch {len(hist)}" if hist.attrs.get("stopped_early") else "finished"
        self.status = f"{done}: " + (log_lines[-1] if log_lines else "")
        self._redraw()
        if self.button is not None:
            self.button.description, self.button.disabled = done, True
        return hist
