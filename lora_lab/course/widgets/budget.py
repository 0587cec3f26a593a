"""Notebook 2's controls: the LoRA budget calculator (parameters, bytes, optimizer state for a model,
a rank and the layers wrapped) and the scaling explorer (how big the first update is under each scaling rule)."""
from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from html import escape

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ...lora.layer import LinearWithLoRA, check_rank, lora_scaling
from ...lora.model import (
    count_parameters,
    lora_layers,
    lora_parameter_names,
    lora_state_dict,
    mark_only_lora_trainable,
    replace_linear_with_lora,
)
from ...models.gpt2 import GPT, PRESETS
from ...models.minilm import MiniLMClassifier
from .display import Interactive, Report, interactive, ipywidgets_module, new_figure

__all__ = ["CALCULATOR_MODELS", "SCALING_RULE_LABELS", "scaling_factor", "meta_classifier", "LoRABudget", "lora_budget",
           "budget_report", "lora_calculator", "first_update_norm", "draw_first_update", "scaling_explorer",
           "UPDATE_RANKS", "safetensors_bytes"]


# --------------------------------------------------------------------------------------------------------------
# ipywidgets, if there is one: every widget works on ipywidgets 7.7 (Colab) and 8 with the same core API, and
# without ipywidgets at all shows its default state and a one-line hint
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# wiring: display the default state once, redraw it in place on every change
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# 1. notebook 1: rank k of a truncated SVD (the photo, and a matrix with a chosen spectrum)
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# 2. notebook 2: the LoRA calculator, and what the scaling rule does to the first step
# --------------------------------------------------------------------------------------------------------------

CALCULATOR_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "all-MiniLM-L6-v2")
SCALING_RULE_LABELS = ("α/r", "raw α", "rsLoRA α/√r")


def scaling_factor(rule: str, rank: int, alpha: float) -> float:
    """The factor the update ``x A B`` is multiplied by: ``alpha / rank`` (LoRA paper, PEFT, lora_lab),
    raw ``alpha`` (the textbook code), or ``alpha / sqrt(rank)`` (rsLoRA)."""
    if rule not in SCALING_RULE_LABELS:
        raise ValueError(f"rule must be one of {SCALING_RULE_LABELS}, got {rule!r}")
    check_rank(rank)  # every rule: a rank of 0 or below is no LoRA layer
    if rule == "raw α":
        return float(alpha)
    return lora_scaling(rank, alpha, use_rslora=rule == "rsLoRA α/√r")


def _minilm_config():
    """all-MiniLM-L6-v2's shape (its config.json: 6 layers, 384 wide, 12 heads, MLP 1536, 30,522 tokens)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)


def meta_classifier(name: str, num_classes: int = 2) -> nn.Module:
    """The course's classifier for ``name`` (a GPT-2 size or all-MiniLM-L6-v2) on PyTorch's meta device: every
    shape, no weights and no memory, so even GPT-2 XL builds in a fraction of a second."""
    if name not in CALCULATOR_MODELS:
        raise ValueError(f"model must be one of {CALCULATOR_MODELS}, got {name!r}")
    with torch.device("meta"), torch.random.fork_rng():  # building draws (unused) random numbers
        if name == "all-MiniLM-L6-v2":
            try:
                from transformers import BertModel
            except ImportError:
                raise ValueError("all-MiniLM-L6-v2's shape needs the transformers package: "
                                 "pip install 'lora-lab[offline]'") from None

            return MiniLMClassifier(BertModel(_minilm_config(), add_pooling_layer=False), num_classes)

        return GPT(PRESETS[name]).to_classifier(num_classes)


def safetensors_bytes(shapes: dict, itemsize: int = 4, dtype: str = "F32", metadata=None) -> int:
    """The exact size of a safetensors file holding tensors of these shapes (name -> shape), one dtype: an
    8-byte length, a JSON header (tensors sorted by name, padded with spaces to a multiple of 8), the data."""
    import json

    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in sorted(shapes):
        size = math.prod(shapes[name]) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    n = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + n + (-n) % 8 + offset


@dataclass(frozen=True)
class LoRABudget:
    """What LoRA on one model costs, counted on the meta device with the package's own functions."""

    model: str
    rank: int
    target: str
    alpha: float
    rule: str
    total: int  # parameters of the wrapped classifier (tied weights once)
    lora: int  # LoRA A and B
    head: int  # the new classification head (trained in full)
    trainable: int  # lora + head
    layers: int  # wrapped Linear layers
    shapes: tuple  # ((in, out, how many), ...) of the wrapped layers
    adapter_bytes: int  # adapter.safetensors as save_adapter writes it (fp32 LoRA weights + head)
    adamw_bytes: int  # AdamW's two fp32 moments per trainable parameter
    scaling: float
    max_rank: int  # the smallest wrapped layer's smaller side

    @property
    def base(self) -> int:
        """Parameters of the classifier before LoRA (transformer + new head): what full fine-tuning trains."""
        return self.total - self.lora

    @property
    def share(self) -> float:
        """LoRA parameters / the base's, the denominator of notebook 2's section 4 table."""
        return self.lora / self.base

    @property
    def trainable_share(self) -> float:
        """Trainable (LoRA + head) / every parameter of the wrapped model, as ``count_parameters`` reports it."""
        return self.trainable / self.total

    @property
    def formula(self) -> str:
        """The closed form with the numbers filled in."""
        terms = " + ".join(f"{c}×({i}+{o})" for i, o, c in self.shapes)
        return f"r · Σ (in + out) = {self.rank} × [{terms}] = {self.lora:,}"


def lora_budget(model: str = "gpt2", rank: int = 16, target: str = "all", alpha: float = 16,
                rule: str = "α/r") -> LoRABudget:
    """LoRA on ``model`` (a GPT-2 size or all-MiniLM-L6-v2, as a 2-class classifier): trainable parameters and
    their share, the adapter file's size, AdamW's state and the scaling factor.

    The counts come from the package itself: :func:`replace_linear_with_lora`, :func:`mark_only_lora_trainable`
    and :func:`count_parameters` on a meta-device model, not from a second formula; the closed form
    ``r · Σ (in + out)`` is shown next to them and must agree."""

    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if not isinstance(alpha, (int, float, np.number)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    factor = scaling_factor(rule, int(rank), alpha)
    m = meta_classifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank above a layer's width: checked below, with a clearer message
        replace_linear_with_lora(m, int(rank), alpha, target=target)
    layers = lora_layers(m)
    width = min(min(x.linear.in_features, x.linear.out_features) for x in layers.values())
    if rank > width:
        raise ValueError(f"rank {rank} is above the width of {model}'s smallest wrapped layer ({width}): the update "
                         f"cannot have a rank above {width}, so the extra rank only adds parameters. "
                         f"Choose a rank from 1 to {width}.")
    mark_only_lora_trainable(m, extra=["classifier"])
    pc = count_parameters(m)
    lora_names = lora_parameter_names(m)
    lora = sum(p.numel() for n, p in m.named_parameters() if n in lora_names)
    shapes = OrderedDict()
    for x in layers.values():
        key = (x.linear.in_features, x.linear.out_features)
        shapes[key] = shapes.get(key, 0) + 1
    closed_form = int(rank) * sum(c * (i + o) for (i, o), c in shapes.items())
    if closed_form != lora:  # the lesson's formula must describe what the package built
        raise RuntimeError(f"the closed form gives {closed_form:,} LoRA parameters but {lora:,} were counted on "
                           f"{model}: lora_budget and replace_linear_with_lora disagree (a bug; please report it)")
    adapter = safetensors_bytes({k: tuple(v.shape) for k, v in lora_state_dict(m, ["classifier"]).items()},
                                metadata={"format": "pt"})
    return LoRABudget(model, int(rank), target, float(alpha), rule, pc.total, lora, pc.trainable - lora,
                      pc.trainable, len(layers), tuple((i, o, c) for (i, o), c in shapes.items()), adapter,
                      8 * pc.trainable, factor, width)


def _size(b: int) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def budget_report(b: LoRABudget) -> Report:
    """The calculator's answer as a table (HTML and plain text)."""
    full_state = 8 * b.base  # full fine-tuning trains the base classifier: no LoRA parameters
    rows = [("model", f"{b.model} as a 2-class classifier: {b.base:,} parameters (+ LoRA = {b.total:,})"),
            ("LoRA on", f"{b.target}: {b.layers} Linear layers, rank {b.rank}"),
            ("LoRA parameters", f"{b.formula}  (formula = count on the meta device ✓)"),
            ("trainable", f"{b.lora:,} LoRA + {b.head:,} head = {b.trainable:,}"),
            ("share", f"LoRA / base = {b.share:.3%}; trainable / (base + LoRA) = {b.trainable_share:.3%} "
                      f"(what count_parameters reports)"),
            ("adapter file", f"{_size(b.adapter_bytes)} ({b.adapter_bytes:,} bytes, fp32 safetensors)"),
            ("AdamW state", f"{_size(b.adamw_bytes)} (8 bytes × {b.trainable:,}); full fine-tuning: "
                            f"{_size(full_state)} (8 bytes × {b.base:,}), {full_state / b.adamw_bytes:.0f}× more"),
            ("scaling", f"{b.rule} with α = {b.alpha:g}, r = {b.rank}: the update is multiplied by {b.scaling:.4g}")]
    text = "\n".join(f"{k:>16}: {v}" for k, v in rows)
    html = ('<table style="font-size:14px">' + "".join(
        f'<tr><th style="text-align:right;padding-right:12px">{escape(k)}</th>'
        f'<td style="text-align:left">{escape(v)}</td></tr>' for k, v in rows) + "</table>")
    return Report(html, text)


def lora_calculator(model: str = "gpt2", rank: int = 16, target: str = "all", alpha: float = 16,
                    rule: str = "α/r", *, show: bool = True) -> Interactive:
    """Model, rank, targets, α and scaling rule -> :func:`budget_report`. The rank slider's maximum follows the
    model (its smallest wrapped layer's width)."""
    w = ipywidgets_module()
    style = {"description_width": "initial"}
    models = [m for m in CALCULATOR_MODELS if m != "all-MiniLM-L6-v2" or _has_transformers()]
    controls = {
        "model": w.Dropdown(options=models, value=model, description="model", style=style),
        "rank": w.IntSlider(value=rank, min=1, max=lora_budget(model, 1, target).max_rank, description="rank r",
                            continuous_update=False, style=style, layout=w.Layout(width="60%")),
        "target": w.ToggleButtons(options=["attention", "mlp", "all"], value=target, description="LoRA on",
                                  style=style),
        "alpha": w.BoundedFloatText(value=alpha, min=0.001, max=1e4, step=1, description="α", style=style),
        "rule": w.ToggleButtons(options=list(SCALING_RULE_LABELS), value=rule, description="scaling", style=style),
    }

    def on_model(change):  # the widest rank this model allows
        cap = lora_budget(change["new"], 1, controls["target"].value).max_rank
        controls["rank"].max = cap

    controls["model"].observe(on_model, names="value")
    return interactive(lambda **v: budget_report(lora_budget(**v)), controls, show=show)


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


UPDATE_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@lru_cache(maxsize=4096)
def first_update_norm(rank: int, rule: str = "α/r", init: str = "peft", alpha: float = 16, lr: float = 1e-3,
                      d: int = 256) -> float:
    """‖ΔW‖ (Frobenius) after one Adam step, measured live on a fresh LoRA layer on a ``d x d`` Linear: the
    same experiment as notebook 2's table (seeded, the same data for every run), so the numbers agree."""

    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= d:
        raise ValueError(f"rank must be a whole number from 1 to {d} (the layer is {d} x {d}: a higher rank "
                         f"cannot add anything), got {rank!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}; e.g. lr=1e-3")
    factor = scaling_factor(rule, int(rank), alpha)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lin = nn.Linear(d, d).requires_grad_(False)
        layer = LinearWithLoRA(lin, int(rank), alpha, use_rslora=rule == "rsLoRA α/√r", init=init)
    layer.lora.scaling = factor
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, d, generator=g), torch.randn(64, d, generator=g)
    params = [layer.lora.A, layer.lora.B]
    opt = torch.optim.Adam(params, lr=lr)
    ((layer(x) - y) ** 2).mean().backward()
    overflow = (f"alpha={alpha:g} with lr={lr:g} overflows float32 in this step ({rule} scales the update by "
                f"{factor:.3g}): the gradients' squares, which Adam keeps, or the update itself are inf, so the "
                "answer would be a meaningless 0.0, inf or NaN. Use a smaller alpha (usually rank to 2 * rank) "
                "or a smaller lr")
    try:
        opt.step()
    except RuntimeError as e:  # an lr above float32's range: "value cannot be converted ... without overflow"
        if "overflow" not in str(e):
            raise
        raise ValueError(overflow) from None
    with torch.no_grad():
        states = [opt.state[p]["exp_avg_sq"] for p in params]
        value = float(torch.linalg.norm(layer.lora.delta_weight()))
        if not math.isfinite(value) or not all(bool(torch.isfinite(v).all()) for v in states):
            raise ValueError(overflow)
        return value


def draw_first_update(rank: int = 16, rule: str = "α/r", init: str = "peft", alpha: float = 16) -> Figure:
    """‖ΔW‖ after one step against rank, for every rule under the chosen init; the chosen rule bold, the
    chosen rank marked with its measured value."""
    value = first_update_norm(rank, rule, init, alpha)
    fig, ax = new_figure(9, 4.3)
    for r_ in SCALING_RULE_LABELS:
        ys = [first_update_norm(k, r_, init, alpha) for k in UPDATE_RANKS]
        ax.loglog(UPDATE_RANKS, ys, "o-", lw=3 if r_ == rule else 1.2, alpha=1 if r_ == rule else 0.45, label=r_)
    ax.loglog([rank], [value], "*", ms=18, color="black", label=f"rank {rank}: {value:.3f}", zorder=5)
    ax.set(xlabel="rank r", ylabel="‖ΔW‖ after one Adam step (log)")
    ax.set_title(f"first update, init={init!r}, α={alpha:g}: {rule} at rank {rank} → ‖ΔW‖ = {value:.3f} "
                 f"(scaling {scaling_factor(rule, rank, alpha):.3g})", fontsize=12)
    ax.legend(fontsize=10)
    return fig


def scaling_explorer(rank: int = 16, rule: str = "α/r", init: str = "peft", alpha: float = 16, *,
                     show: bool = True) -> Interactive:
    """Rank, scaling rule, init and α -> the size of the first update, measured live (one Adam step on a
    256 x 256 layer, a few milliseconds)."""
    w = ipywidgets_module()
    style = {"description_width": "initial"}
    controls = {
        "rank": w.IntSlider(value=rank, min=1, max=256, description="rank r", continuous_update=False, style=style,
                            layout=w.Layout(width="60%")),
        "rule": w.ToggleButtons(options=list(SCALING_RULE_LABELS), value=rule, description="scaling", style=style),
        "init": w.ToggleButtons(options=["peft", "textbook"], value=init, description="init of A", style=style),
        "alpha": w.IntSlider(value=int(alpha), min=1, max=64, description="α", continuous_update=False, style=style),
    }
    def draw(rank, rule, init, alpha):
        v = first_update_norm(rank, rule, init, alpha)
        text = (f"rank {rank}, {rule}, init {init!r}, α = {alpha:g}: scaling {scaling_factor(rule, rank, alpha):.4g}, "
                f"‖ΔW‖ after one Adam step = {v:.4f}")
        return draw_first_update(rank, rule, init, alpha), Report(f'<div style="font-size:15px">{escape(text)}</div>',
                                                                  text)

    return interactive(draw, controls, show=show)


# --------------------------------------------------------------------------------------------------------------
# 4. notebook 4: training curves redrawn while training runs, with a Stop button
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# 5. notebook 6: try your own message with each adapter, merged or not
# --------------------------------------------------------------------------------------------------------------


