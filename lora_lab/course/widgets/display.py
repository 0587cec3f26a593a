"""How every control shows itself: its default state as an ordinary output (a figure or a table) that a
slider redraws in place, with or without a live front end, ipywidgets 7 or 8, or none at all."""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from ...utils import env

__all__ = ["in_kernel", "live_frontend", "Report", "Interactive", "interactive", "CONTROLS_NOTE",
           "NO_WIDGETS_HINT", "NO_STOP_HINT"]


CONTROLS_NOTE = ("(interactive controls: run this cell in JupyterLab or Colab to use them; "
                 "the output above is their default state)")


NO_WIDGETS_HINT = ("(the controls need ipywidgets, which is not installed here: pip install ipywidgets, then "
                   "restart the kernel; the output above is their default state)")


NO_STOP_HINT = ("(no Stop button here{why}: interrupt the kernel (■) to stop cleanly after the current batch; "
                "the history so far is kept)")


class _StaticControl:
    """A control without a front end (no ipywidgets): it holds a value, and setting it tells the observers, as
    an ipywidget does, so the wiring is the same (and testable)."""

    def __init__(self, value=None, **kwargs):
        self.value_ = value
        self.kwargs = kwargs
        self.observers = []

    @property
    def value(self):
        return self.value_

    @value.setter
    def value(self, new):
        old, self.value_ = self.value_, new
        if new != old:
            for fn in self.observers:
                fn({"name": "value", "old": old, "new": new, "owner": self, "type": "change"})

    def observe(self, fn, names=None):
        self.observers.append(fn)

    def on_click(self, fn):
        pass

    def __getattr__(self, name):  # max, min, description, disabled, ...: whatever was given, else None
        return self.__dict__.get("kwargs", {}).get(name)


class _NoWidgets:
    """Stands in for the ``ipywidgets`` module when it is not installed: every control is a :class:`_StaticControl`."""

    available = False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: _StaticControl(**kwargs) if name != "Layout" else None


def ipywidgets_module():
    """The ``ipywidgets`` module, or a stand-in (:class:`_NoWidgets`) when it cannot be imported."""
    try:
        import ipywidgets
    except ImportError:
        return _NoWidgets()
    return ipywidgets


def has_widgets(w) -> bool:
    return getattr(w, "available", True)


def in_kernel() -> bool:
    """Are we inside a Jupyter kernel (JupyterLab, Colab, nbconvert, nbval), not a plain script?"""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def live_frontend() -> bool:
    """Is someone watching a live notebook, so that a live view (figure redrawn while training, Stop button)
    makes sense? Not in a script, not under CI, nbval or ``make execute`` (they set ``CI`` or
    ``LORA_LAB_PROGRESS=0``): there a live view would only save its first frame, so the plain progress output is
    used instead. ``LORA_LAB_WIDGETS=1`` or ``0`` overrides the guess."""
    forced = env.widgets()
    if forced is not None:
        return forced and in_kernel()
    return in_kernel() and env.progress()


class Report:
    """A table (or any short result) with an HTML form for notebooks and a plain-text form for text readers,
    nbval and logs. ``display(Report(...))`` shows whichever the front end can."""

    def __init__(self, html: str, text: str):
        self.html, self.text = html, text

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html, "text/plain": self.text}

    def __repr__(self) -> str:
        return self.text


def _message(error: Exception) -> Report:
    msg = str(error)
    return Report(f'<div style="color:#b00020;font-weight:bold">⚠ {escape(msg)}</div>', f"⚠ {msg}")


def _bundle(obj) -> dict:
    """The mime bundle of a Figure (a PNG, drawn here, so it shows even where pyplot's inline backend was
    never set up) or of anything with ``_repr_mimebundle_`` (a :class:`Report`)."""
    if isinstance(obj, Figure):
        import base64
        import io

        buf = io.BytesIO()
        obj.savefig(buf, format="png", bbox_inches="tight")
        return {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(obj)}
    if hasattr(obj, "_repr_mimebundle_"):
        return dict(obj._repr_mimebundle_())
    return {"text/plain": repr(obj)}


def display_output(obj, **kwargs):
    """Display ``obj``; with ``display_id=True`` the returned handle's ``update(obj)`` redraws it in place."""
    from IPython.display import DisplayHandle, display

    if isinstance(obj, (Figure, Report)):
        handle = display(_bundle(obj), raw=True, **kwargs)
        return _Handle(handle) if isinstance(handle, DisplayHandle) else handle
    return display(obj, **kwargs)


class _Handle:
    def __init__(self, handle):
        self.handle = handle

    def update(self, obj) -> None:
        self.handle.update(_bundle(obj), raw=True)


def _show_controls(box) -> None:
    """Display the controls with a plain-text note for readers without widgets (GitHub, nbval), instead of
    ipywidgets' ``VBox(children=(...))``."""
    if not hasattr(box, "_repr_mimebundle_"):  # ipywidgets 7 (as on Colab) displays itself
        display_output(box)
        return
    bundle = dict(box._repr_mimebundle_() or {})
    bundle["text/plain"] = CONTROLS_NOTE
    display_output(bundle, raw=True)


@dataclass
class Interactive:
    """Controls wired to a draw function. ``draw`` returns one output or a tuple of them (a Figure, a
    :class:`Report`); ``outputs`` holds the last redraw's, ``result`` the first of them (a Report with the error
    message if the values were bad). ``redraw()`` draws again from the controls' current values (a change of
    any control calls it)."""

    draw: Callable
    controls: dict
    outputs: tuple = ()
    error: str | None = None
    handles: list = field(default_factory=list)
    redraws: int = 0
    box: object = None

    @property
    def result(self):
        return self.outputs[0]

    def values(self) -> dict:
        return {k: w.value for k, w in self.controls.items()}

    def redraw(self, *_):
        try:
            out, self.error = self.draw(**self.values()), None
            out = out if isinstance(out, tuple) else (out,)
        except (ValueError, TypeError) as e:  # a bad value: say so in place, keep the widget alive
            out, self.error = (_message(e),), str(e)
        n = max(len(out), len(self.outputs))
        self.outputs = out + (Report("", ""),) * (n - len(out))  # blank what the message replaces
        self.redraws += 1
        for handle, obj in zip(self.handles, self.outputs):
            handle.update(obj)
        return self.result


def interactive(draw: Callable, controls: dict, *, show: bool = True, before=None) -> Interactive:
    """Wire ``controls`` (name -> ipywidget) to ``draw(**values)``: draw the default state and display it (a
    plain output, so it is saved with the notebook), then display the controls; every change redraws that
    same output in place. ``show=False`` builds and draws without displaying (tests, scripts). ``before``: an
    optional widget shown above the controls (e.g. a note)."""
    w = ipywidgets_module()
    it = Interactive(draw, dict(controls))
    it.redraw()
    it.redraws = 0
    kids = ([before] if before is not None else []) + list(controls.values())
    it.box = w.VBox(kids) if has_widgets(w) else None
    if show and in_kernel():
        it.handles = [display_output(obj, display_id=True) for obj in it.outputs]
        if it.box is not None:
            _show_controls(it.box)
        else:  # no ipywidgets: the default state above, and how to get the controls
            display_output(Report(f'<div style="color:#555"><i>{escape(NO_WIDGETS_HINT)}</i></div>', NO_WIDGETS_HINT))
    for c in controls.values():
        c.observe(it.redraw, names="value")
    return it


def new_figure(width=10.0, height=4.0, ncols=1, **kw):
    """A Figure outside pyplot (nothing to close, nothing shown by the inline backend at the next cell)."""
    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    axes = fig.subplots(1, ncols, **kw)
    for ax in np.atleast_1d(axes):
        ax.grid(True, alpha=0.3)
    return fig, axes
