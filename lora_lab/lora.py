"""LoRA: low-rank adaptation of linear layers.

The whole idea in one line: a frozen linear layer ``W x + b`` gets a trainable
low-rank detour, so it computes

    y = W x + b + scaling * (x @ A @ B)          A: (in_dim, rank), B: (rank, out_dim)

Only ``A`` and ``B`` are trained. Because ``B`` starts at zero, a freshly wrapped
model computes exactly what the base model computed; training then moves ``A @ B``
away from zero. ``rank * (in_dim + out_dim)`` numbers replace ``in_dim * out_dim``.

The names and signatures below are the ones of the well-known code the course starts
from (``LoRALayer(in_dim, out_dim, rank, alpha)``, ``LinearWithLoRA(linear, rank, alpha)``,
``replace_linear_with_lora(model, rank, alpha)``). One thing differs on purpose:

* **Scaling.** That code multiplies the update by the raw ``alpha``. The LoRA paper
  (Hu et al., 2021, section 4.1) and PEFT scale by ``alpha / rank`` so that changing the
  rank does not change the size of the update at initialisation-scale learning rates;
  with raw ``alpha`` the effective learning rate of the update grows with ``alpha``
  and doubling the rank doubles the update. ``use_rslora=True`` uses ``alpha / sqrt(rank)``
  (rank-stabilised LoRA, Kalajdzievski 2023), which keeps learning stable at large ranks.
  With ``rank == alpha`` (a common choice, 16/16) our scaling is 1 while raw ``alpha``
  is 16: the same code trains 16x "hotter" there.

* **Initialisation of A.** Kept as in that code: ``A`` is ``(in_dim, rank)`` with
  ``kaiming_uniform_(a=sqrt(5))``, so its fan-in is ``rank`` (PEFT stores ``A`` as a
  ``(rank, in_dim)`` Linear weight, whose fan-in is ``in_dim``). Only the spread of the
  random start differs; ``B = 0`` keeps the start exact either way.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .files import atomic_write, sha256_of

__all__ = [
    "LoRALayer",
    "LinearWithLoRA",
    "replace_linear_with_lora",
    "lora_layers",
    "merge_lora",
    "unmerge_lora",
    "mark_only_lora_trainable",
    "mark_trainable",
    "ParamCount",
    "count_parameters",
    "lora_parameter_count",
    "lora_state_dict",
    "save_adapter",
    "load_adapter",
    "AdapterMismatchError",
    "TARGET_PRESETS",
    "DEFAULT_EXCLUDE",
]

# Which Linear layers to wrap. Patterns are shell-style globs over the module's full
# name (as in ``model.named_modules()``); they cover our GPT-2, Hugging Face GPT-2 and
# BERT-style models (MiniLM) alike.
ATTENTION_PATTERNS = ("*attn*", "*attention*")
MLP_PATTERNS = ("*mlp*", "*intermediate*", "*.output.dense")
TARGET_PRESETS = ("all", "attention", "mlp")
# Output heads are skipped by default: a *new* classification head should be trained in
# full (it is tiny and starts random), and an LM head is tied to the token embedding.
DEFAULT_EXCLUDE = ("lm_head", "classifier", "score", "out_head")


class AdapterMismatchError(ValueError):
    """An adapter file does not fit the model it is being loaded onto."""


def _check_hparams(rank, alpha, dropout) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be a positive int, got {rank!r} ({type(rank).__name__}); "
                        "use e.g. rank=8 or rank=16")
    if rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank}; use e.g. rank=8 or rank=16")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}; a common choice is alpha=rank "
                         "(scaling 1) or alpha=2*rank")
    if not isinstance(dropout, (int, float)) or not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}; use 0.0 to switch it off")


def lora_scaling(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor the low-rank update is multiplied by: alpha/rank (LoRA, PEFT) or alpha/sqrt(rank) (rsLoRA)."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


class LoRALayer(nn.Module):
    """The low-rank update ``scaling * dropout(x) @ A @ B`` on its own.

    Args:
        in_dim, out_dim: the shape of the linear layer it adapts.
        rank: the inner dimension r of ``A @ B``; the update has rank at most r.
        alpha: the strength of the update; the update is multiplied by ``alpha / rank``
            (or ``alpha / sqrt(rank)`` with ``use_rslora``). See the module docstring for
            why this differs from raw ``alpha``.
        dropout: dropout on the input of the LoRA path only (the frozen path sees ``x``).
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, *,
                 dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        _check_hparams(rank, alpha, dropout)
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # like nn.Linear's default init
        self.B = nn.Parameter(torch.zeros(rank, out_dim))  # zero => the update starts at exactly 0
        self.rank = rank
        self.alpha = alpha
        self.use_rslora = use_rslora
        self.scaling = lora_scaling(rank, alpha, use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.A @ self.B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update as a weight matrix shaped like ``nn.Linear.weight``: ``(out_dim, in_dim)``."""
        return (self.A @ self.B).T * self.scaling

    def extra_repr(self) -> str:
        rule = "alpha/sqrt(rank)" if self.use_rslora else "alpha/rank"
        return (f"in_dim={self.A.shape[0]}, out_dim={self.B.shape[1]}, rank={self.rank}, "
                f"alpha={self.alpha}, scaling={self.scaling:g} ({rule})")


class LinearWithLoRA(nn.Module):
    """A frozen-able ``nn.Linear`` plus a :class:`LoRALayer`: ``linear(x) + lora(x)``.

    ``merge()`` folds the update into ``linear.weight`` (no extra cost at inference);
    ``unmerge()`` takes it back out so training can continue. Merging twice is a no-op.
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, *,
                 dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LinearWithLoRA wraps an nn.Linear, got {type(linear).__name__}")
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha,
                              dropout=dropout, use_rslora=use_rslora)
        w = linear.weight
        if w.device.type != "meta":
            self.lora.to(device=w.device, dtype=w.dtype if w.dtype.is_floating_point else None)
        else:
            self.lora.to(device="meta")
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.linear(x)
        return self.linear(x) + self.lora(x)

    @torch.no_grad()
    def merge(self) -> "LinearWithLoRA":
        """Fold ``scaling * (A @ B)`` into the frozen weight. Idempotent."""
        if not self.merged:
            self.linear.weight += self.lora.delta_weight().to(self.linear.weight.dtype)
            self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self) -> "LinearWithLoRA":
        """Take the update back out of the frozen weight. Idempotent."""
        if self.merged:
            self.linear.weight -= self.lora.delta_weight().to(self.linear.weight.dtype)
            self.merged = False
        return self

    def extra_repr(self) -> str:
        return f"merged={self.merged}"


def _is_target(name: str, target, exclude: Sequence[str]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(leaf, p) for p in exclude):
        return False
    if target == "all":
        return True
    in_attn = any(fnmatch.fnmatchcase(name, p) for p in ATTENTION_PATTERNS)
    if target == "attention":
        return in_attn
    if target == "mlp":
        return not in_attn and any(fnmatch.fnmatchcase(name, p) for p in MLP_PATTERNS)
    if isinstance(target, str):
        raise ValueError(f"target must be one of {TARGET_PRESETS} or a list of name patterns, got {target!r}")
    return any(fnmatch.fnmatchcase(name, p) for p in target)


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float, *,
                             target="all", exclude: Sequence[str] = DEFAULT_EXCLUDE,
                             dropout: float = 0.0, use_rslora: bool = False) -> nn.Module:
    """Wrap the model's ``nn.Linear`` layers in :class:`LinearWithLoRA`, recursively and in place.

    Args:
        target: ``"all"`` (every Linear), ``"attention"``, ``"mlp"``, or a list of glob
            patterns matched against full module names (e.g. ``["*.attn.c_attn"]``).
        exclude: glob patterns never wrapped; by default output heads (``lm_head``,
            ``classifier``, ...), which are trained in full or tied. Pass ``()`` to wrap them too.

    Layers already wrapped are left as they are (no nested wrappers); wrapping them again
    with a different rank or alpha is an error. Returns ``model`` for convenience.
    """
    _check_hparams(rank, alpha, dropout)
    wrapped, existing = [], []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if isinstance(child, LinearWithLoRA):
                if (child.lora.rank, child.lora.alpha, child.lora.use_rslora) != (rank, alpha, use_rslora):
                    raise ValueError(
                        f"{name} is already wrapped with rank={child.lora.rank}, alpha={child.lora.alpha}; "
                        f"cannot wrap it again with rank={rank}, alpha={alpha}. Start from the base model.")
                existing.append(name)
            elif isinstance(child, nn.Linear):
                if _is_target(name, target, exclude):
                    setattr(module, child_name, LinearWithLoRA(child, rank, alpha, dropout=dropout,
                                                               use_rslora=use_rslora))
                    wrapped.append(name)
            else:
                visit(child, f"{name}.")

    visit(model, "")
    if not wrapped and not existing:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        hint = (f"its Linear layers are {linears[:6]}{' ...' if len(linears) > 6 else ''}; "
                f"check target={target!r} and exclude={tuple(exclude)!r}") if linears else \
            "it has no nn.Linear layer at all (LoRA here adapts nn.Linear layers)"
        raise ValueError(f"replace_linear_with_lora found no layer to wrap in {type(model).__name__}: {hint}")
    return model


def lora_layers(model: nn.Module) -> dict[str, LinearWithLoRA]:
    """All LoRA-wrapped layers of a model, by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LinearWithLoRA)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of the model (see :meth:`LinearWithLoRA.merge`)."""
    for m in lora_layers(model).values():
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_layers(model).values():
        m.unmerge()
    return model


def mark_trainable(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Set ``requires_grad=True`` on parameters whose name matches a glob pattern or starts
    with a given module name (``"classifier"`` matches ``classifier.weight``). Returns the names."""
    patterns = list(patterns)
    names = []
    for name, p in model.named_parameters():
        if any(name == pat or name.startswith(pat + ".") or fnmatch.fnmatchcase(name, pat) for pat in patterns):
            p.requires_grad_(True)
            names.append(name)
    return names


def mark_only_lora_trainable(model: nn.Module, extra: Iterable[str] = ("classifier",)) -> nn.Module:
    """Freeze everything except the LoRA ``A``/``B`` matrices and the named extra modules
    (by default the new classification head, which starts random and must be trained)."""
    if not lora_layers(model):
        raise ValueError("the model has no LoRA layers; call replace_linear_with_lora(model, rank, alpha) first")
    for name, p in model.named_parameters():
        p.requires_grad_(".lora." in f".{name}")
    mark_trainable(model, extra)
    return model


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.trainable:,} trainable of {self.total:,} ({100 * self.fraction:.3f}%)"


def count_parameters(model: nn.Module) -> ParamCount:
    """Count parameters (shared/tied tensors once)."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return ParamCount(total, trainable)


def lora_parameter_count(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """Closed form: a LoRA layer on an ``in x out`` Linear adds ``rank * (in + out)`` parameters.

    ``shapes`` are ``(in_features, out_features)`` of the wrapped layers, e.g. from
    :func:`lora_lab.gpt2.linear_shapes`.
    """
    return sum(rank * (i + o) for i, o in shapes)


def lora_state_dict(model: nn.Module, extra: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The LoRA weights (and any named extra modules, e.g. ``"classifier"``): what an adapter file holds."""
    extra = list(extra)
    out = {}
    for name, t in model.state_dict().items():
        if ".lora." in f".{name}" or any(name.startswith(e + ".") or name == e for e in extra):
            out[name] = t.detach()
    return out


ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _base_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "name", None) or getattr(cfg, "_name_or_path", None) or None


def save_adapter(model: nn.Module, path, *, extra: Iterable[str] = ("classifier",),
                 base_model: str | None = None, task: str | None = None) -> Path:
    """Write the adapter (LoRA weights + extra modules such as the new head) to a folder:
    ``adapter.safetensors`` and ``adapter_config.json`` (rank, alpha, scaling rule, wrapped
    layers, base model, the weights' sha256). Both are written atomically.
    """
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save; wrap it with replace_linear_with_lora first")
    if any(m.merged for m in layers.values()):
        raise ValueError("the model's LoRA layers are merged; call unmerge_lora(model) before save_adapter")
    first = next(iter(layers.values())).lora
    path = Path(path)
    tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(model, extra).items()}
    weights = path / ADAPTER_WEIGHTS
    atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config = {
        "format": "lora_lab.adapter/1",
        "base_model": base_model or _base_name(model),
        "task": task,
        "rank": first.rank,
        "alpha": first.alpha,
        "scaling_rule": "alpha/sqrt(rank)" if first.use_rslora else "alpha/rank",
        "dropout": first.dropout.p if isinstance(first.dropout, nn.Dropout) else 0.0,
        "layers": sorted(layers),
        "extra_modules": sorted(set(extra)),
        "num_tensors": len(tensors),
        "sha256": sha256_of(weights),
    }
    atomic_write(path / ADAPTER_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return path


def load_adapter(model: nn.Module, path, *, base_model: str | None = None) -> dict:
    """Load an adapter folder written by :func:`save_adapter` onto ``model`` (in place).

    A base model that has no LoRA layers yet is wrapped first, with the adapter's rank,
    alpha and layers. Loading a second adapter onto the same wrapped model swaps tasks.
    Raises :class:`AdapterMismatchError` when the adapter was made for another base model,
    other layers, or other shapes, and ``ValueError`` when the file is corrupt.
    Returns the adapter's config.
    """
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{path} is not an adapter folder: expected {ADAPTER_CONFIG} and "
                                f"{ADAPTER_WEIGHTS} in it (write one with save_adapter)")
    cfg = json.loads(cfg_path.read_text())
    actual = sha256_of(weights)
    if actual != cfg.get("sha256"):
        raise ValueError(f"{weights} is corrupt or was changed: sha256 {actual}, expected {cfg.get('sha256')} "
                         "from its config. Save the adapter again.")
    model_base = base_model or _base_name(model)
    if cfg.get("base_model") and model_base and cfg["base_model"] != model_base:
        raise AdapterMismatchError(f"adapter {path} was trained on base model {cfg['base_model']!r}, "
                                   f"but this model is {model_base!r}; load it onto {cfg['base_model']!r}")
    use_rslora = cfg["scaling_rule"] == "alpha/sqrt(rank)"
    if not lora_layers(model):
        replace_linear_with_lora(model, cfg["rank"], cfg["alpha"], target=list(cfg["layers"]), exclude=(),
                                 use_rslora=use_rslora)
    layers = lora_layers(model)
    if sorted(layers) != cfg["layers"]:
        missing = sorted(set(cfg["layers"]) - set(layers))
        extra_l = sorted(set(layers) - set(cfg["layers"]))
        raise AdapterMismatchError(f"adapter {path} does not fit this model's LoRA layers: "
                                   f"in the adapter only: {missing[:5]}, in the model only: {extra_l[:5]}")
    tensors = load_file(weights)
    own = model.state_dict()
    problems = [f"{k}: not in model" for k in tensors if k not in own]
    problems += [f"{k}: adapter {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in tensors.items() if k in own and own[k].shape != v.shape]
    if problems:
        raise AdapterMismatchError(f"adapter {path} does not fit this model: " + "; ".join(problems[:8]))
    for m in layers.values():
        if m.merged:
            raise ValueError("unmerge_lora(model) before loading another adapter")
        m.lora.rank, m.lora.alpha, m.lora.use_rslora = cfg["rank"], cfg["alpha"], use_rslora
        m.lora.scaling = lora_scaling(cfg["rank"], cfg["alpha"], use_rslora)
    model.load_state_dict(tensors, strict=False)
    return cfg
