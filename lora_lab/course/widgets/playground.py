"""Notebook 6's playground: type a message, choose an adapter (or none, or merged), see what the model says."""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Callable

import torch
from torch import nn

from ...data.sms import Batch, has_content
from ...lora.adapter_file import load_adapter
from ...lora.model import (
    merge_lora,
    unmerge_lora,
)
from ...train.measure import latency_ms
from .display import Interactive, Report, interactive, ipywidgets_module

__all__ = ["Prediction", "classify_message", "AdapterChoice", "AdapterPlayground", "message_playground"]


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # of that label
    probabilities: tuple  # of every class
    latency_ms: float  # median forward pass of this one message
    tokens: int


def _encode(tokenizer, text: str, max_tokens: int | None) -> list[int]:
    ids = tokenizer.encode_ordinary_batch([text])[0]
    return list(ids[:max_tokens] if max_tokens else ids)


@torch.no_grad()
def classify_message(model: nn.Module, tokenizer, text: str, classes=("ham", "spam"), *, max_tokens: int | None = 512,
                     reps: int = 10) -> Prediction:
    """Classify one message: the predicted class, its probability and the median latency of ``reps``
    forward passes. An empty message is an error with the fix in its message, not a silent 50/50."""

    if not has_content(text):
        raise ValueError("type a message first: an empty or blank message (or one of only invisible characters) "
                         "has nothing to classify")
    ids = _encode(tokenizer, text, max_tokens)
    if not ids:
        raise ValueError(f"the message {text!r} has no tokens after tokenization; type some words")
    cfg = getattr(model, "config", None)
    context = getattr(cfg, "block_size", None) or getattr(cfg, "max_position_embeddings", None)
    if isinstance(context, int) and len(ids) > context:  # the model's own error is about its input_ids
        raise ValueError(f"the message has {len(ids)} tokens, more than the model's context of {context}: pass "
                         f"max_tokens={context} (or less) to classify_message or AdapterPlayground, which keeps the "
                         f"first {context} tokens")
    device = next(model.parameters()).device

    batch = Batch(torch.tensor([ids], device=device), torch.tensor([len(ids)], device=device),
                  torch.zeros(1, dtype=torch.long, device=device))
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(model(batch.input_ids, batch.lengths).float(), -1)[0].cpu()
        ms = latency_ms(model, batch, reps=reps, warmup=2)
    finally:
        model.train(was_training)
    if len(classes) != len(probs):
        raise ValueError(f"{len(classes)} class names for a {len(probs)}-class model; pass one name per class")
    i = int(probs.argmax())
    return Prediction(classes[i], float(probs[i]), tuple(float(p) for p in probs), ms, len(ids))


@dataclass(frozen=True)
class AdapterChoice:
    """One entry of the playground's dropdown: an adapter folder (None: the base model, no adapter), the names
    of its classes, and how its training data prepared a message (the question task deleted every '?')."""

    path: object
    classes: tuple = ("ham", "spam")
    prepare: Callable | None = None


class AdapterPlayground:
    """One message, several adapters on one base: switch adapter, merge or unmerge, and see the prediction,
    its probability and the latency. ``base`` is the model without LoRA (the "no adapter" choice); ``model``
    is the same base that adapters are loaded onto (:func:`lora_lab.lora.load_adapter`)."""

    def __init__(self, model: nn.Module, base: nn.Module, tokenizer, choices: dict, *, max_tokens: int | None = 512,
                 reps: int = 10):
        if not choices:
            raise ValueError("give at least one choice, e.g. {'base model, no adapter': AdapterChoice(None)}")
        self.model, self.base, self.tokenizer = model, base, tokenizer
        self.choices, self.max_tokens, self.reps = dict(choices), max_tokens, reps
        self.loaded = None  # the adapter now on self.model

    def _model_for(self, name: str, merged: bool) -> nn.Module:
        if name not in self.choices:
            raise ValueError(f"no adapter called {name!r}; choose one of {list(self.choices)}")
        path = self.choices[name].path
        if path is None:  # nothing to merge: the merge switch does not apply
            return self.base
        if self.loaded != name:
            unmerge_lora(self.model)  # load_adapter insists on unmerged layers
            load_adapter(self.model, path)
            self.loaded = name
        (merge_lora if merged else unmerge_lora)(self.model)
        return self.model

    def predict(self, text: str, name: str, merged: bool = False) -> Prediction:
        choice = self.choices.get(name)
        model = self._model_for(name, merged)
        if choice.prepare is not None and isinstance(text, str):
            text = choice.prepare(text)
        return classify_message(model, self.tokenizer, text, choice.classes, max_tokens=self.max_tokens,
                                reps=self.reps)

    def table(self, text: str) -> Report:
        """The message under every choice, unmerged and (for adapters) merged: the static picture."""
        rows = []
        for name, choice in self.choices.items():
            for merged in ((False,) if choice.path is None else (False, True)):
                p = self.predict(text, name, merged)
                rows.append((name, "merged" if merged else ("—" if choice.path is None else "unmerged"), p.label,
                             f"{p.probability:.3f}", f"{p.latency_ms:.1f} ms"))
        if any(c.path is not None for c in self.choices.values()):
            unmerge_lora(self.model)
        head = ("choice", "weights", "prediction", "probability", "latency")
        text_rows = [head] + rows
        widths = [max(len(str(r[i])) for r in text_rows) for i in range(len(head))]
        txt = f"message: {text!r}\n" + "\n".join("  ".join(str(v).ljust(wd) for v, wd in zip(r, widths))
                                                 for r in text_rows)
        html = (f"<p>message: <i>{escape(text)}</i></p><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
                + "</table>")
        return Report(html, txt)

    def report(self, text: str, name: str, merged: bool = False) -> Report:
        p = self.predict(text, name, merged)
        probs = ", ".join(f"{c} {q:.3f}" for c, q in zip(self.choices[name].classes, p.probabilities))
        if self.choices[name].path is None:
            weights = " (no adapter, so nothing to merge)"
        else:
            weights = " (merged into the weights)" if merged else " (unmerged: two extra small matmuls per layer)"
        txt = (f"{name}{weights}: {p.label} with probability {p.probability:.3f} ({probs}); {p.tokens} tokens, "
               f"median latency {p.latency_ms:.1f} ms over {self.reps} runs")
        html = (f'<div style="font-size:15px"><b>{escape(p.label)}</b> with probability <b>{p.probability:.3f}</b> '
                f"({escape(probs)})<br>{escape(name + weights)}; {p.tokens} tokens; median latency "
                f"<b>{p.latency_ms:.1f} ms</b> over {self.reps} runs</div>")
        return Report(html, txt)


def message_playground(playground: AdapterPlayground, text: str = "", choice: str | None = None, *,
                       show: bool = True) -> Interactive:
    """A text box, a dropdown of the adapters (and the base model), and a merge toggle, wired to
    :meth:`AdapterPlayground.report`. Press Enter (or leave the box) to classify."""
    w = ipywidgets_module()
    names = list(playground.choices)
    style = {"description_width": "initial"}
    controls = {
        "text": w.Text(value=text, placeholder="type a message and press Enter", description="message",
                       continuous_update=False, style=style, layout=w.Layout(width="90%")),
        "name": w.Dropdown(options=names, value=choice or names[-1], description="adapter", style=style),
        "merged": w.ToggleButton(value=False, description="merged", icon="compress",
                                 tooltip="fold the adapter into the weights (W + scaling·(AB)ᵀ) or take it out"),
    }
    return interactive(lambda text, name, merged: playground.report(text, name, merged), controls, show=show)
