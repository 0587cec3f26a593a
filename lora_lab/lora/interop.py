"""Take a LoRA adapter to the tools the field uses, and bring theirs in: Hugging Face PEFT and transformers.

Three calls do it:

* ``save_adapter(model, path, format="peft")`` (:func:`save_peft_adapter`): the folder PEFT writes
  (``adapter_config.json`` + ``adapter_model.safetensors``); ``peft.PeftModel.from_pretrained`` loads it onto
  ``transformers.GPT2ForSequenceClassification`` (or ``BertModel`` for the MiniLM track).
* :func:`export_merged`: LoRA folded into the weights, in the ``transformers`` layout (``config.json`` +
  ``model.safetensors``); ``GPT2ForSequenceClassification.from_pretrained`` loads it, no PEFT needed.
* ``load_adapter(model, path)`` on a PEFT LoRA folder (:func:`read_peft_adapter`): an adapter trained with PEFT
  runs on our model.

What maps onto what, for GPT-2 (checked in ``tests/test_interop.py`` against PEFT and transformers):

====================================  ==================================================================
ours (``lora_lab``)                   transformers / PEFT
====================================  ==================================================================
``transformer.h.0.attn.c_attn``       the same name; there a ``Conv1D`` whose weight is stored ``(in, out)``,
(``nn.Linear``, weight ``(out, in)``)  so weights are transposed on the way (PEFT: ``fan_in_fan_out=True``)
``lora.A``, ``(in, r)``               ``...c_attn.lora_A.weight`` = ``A.T``, ``(r, in)`` (an ``nn.Linear(in, r)``)
``lora.B``, ``(r, out)``              ``...c_attn.lora_B.weight`` = ``B.T``, ``(out, r)``
``alpha / rank`` or rsLoRA            ``lora_alpha``, ``r``, ``use_rslora``: the same two rules
``classifier``: ``Linear(d, k)``      ``score``: ``Linear(d, k, bias=False)``, saved whole (``modules_to_save``)
with a bias                           and the bias folded into ``transformer.ln_f`` (see :func:`fold_head_bias`)
last real token, from ``lengths``     last token that is not ``config.pad_token_id`` (50256, GPT-2's padding)
====================================  ==================================================================

PEFT's file names every tensor ``base_model.model.<module>.lora_A.weight``: the adapter's name (``default``) is
not in the file. For the MiniLM track (a BERT encoder inside :class:`lora_lab.models.minilm.MiniLMClassifier`) our names
are ``encoder.<BertModel name>`` and the layers are plain ``nn.Linear`` on both sides (``fan_in_fan_out=False``);
transformers has no class with our mean-pooling head, so the head travels beside the adapter in
``head.safetensors`` (``weight``, ``bias``), which PEFT ignores and :func:`load_adapter` reads.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..models.protocol import HFLayout
from ..utils.files import atomic_write, check_regular_file, permissions, read_json_file, read_text_file, swap_folder
from .contents import ADAPTER_CONFIG, AdapterContents, AdapterMismatchError, check_config_rank, check_finite
from .layer import LinearWithLoRA, check_hparams, plain_number
from .model import lora_layers, lora_parameter_names, selects, shared_hparams

__all__ = ["save_peft_adapter", "read_peft_adapter", "export_merged", "export_base", "fold_head_bias",
           "PEFT_WEIGHTS", "HEAD_WEIGHTS", "HF_WEIGHTS", "HF_CONFIG", "check_export_folder"]

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
HEAD_WEIGHTS = "head.safetensors"  # the MiniLM head: no transformers class pools like ours
HEAD_NOTE = "lora_lab.head"  # in adapter_model.safetensors' metadata when the head was saved beside it
HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
# PEFT LoRA options that change what the file means in ways lora_lab cannot represent: any of them set is an error
_UNSUPPORTED = {
    "use_dora": "DoRA (weight-decomposed LoRA: a magnitude vector per layer)",
    "rank_pattern": "a different rank for some layers",
    "alpha_pattern": "a different alpha for some layers",
    "lora_bias": "trained biases on lora_B",
    "layer_replication": "replicated layers",
    "target_parameters": "LoRA on bare parameters (not layers)",
    "trainable_token_indices": "trainable token embeddings",
    "use_qalora": "QALoRA",
    "alora_invocation_tokens": "activated LoRA",
    "use_bdlora": "BD-LoRA",
    "layers_to_transform": "LoRA on some layer indices only (PEFT would skip the other layers' tensors)",
}


def _layout(model: nn.Module) -> HFLayout:
    if hasattr(model, "hf_layout"):  # lora_lab's models declare it (lora_lab.models.protocol.Classifier)
        return model.hf_layout()
    if type(model).__name__ == "BertModel":  # transformers' own encoder, as MiniLM's PEFT base
        return HFLayout("BertModel", "", None, None, None)
    raise TypeError(f"cannot map a {type(model).__name__} onto a transformers class: the PEFT and transformers "
                    "exports know models with an hf_layout() (lora_lab's GPT and MiniLMClassifier) and "
                    "transformers' BertModel")


def fold_head_bias(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The shift ``delta`` of the head's input with ``weight @ delta == bias``: the smallest one (the
    pseudo-inverse, in float64).

    Why: our GPT-2 head is ``Linear(d, k)`` with a bias; transformers' ``score`` has none. The head's input is
    the output of the final LayerNorm ``ln_f``, whose own bias ``beta`` only ever feeds the head, so
    ``score(ln_f(x))`` with ``beta + delta`` gives ``W ln_f(x) + W delta = W ln_f(x) + b``: the same logits, exact
    up to float rounding, and nothing else reads ``ln_f``. (What changes is the hidden state transformers reports
    after ``ln_f``, ``output_hidden_states=True``'s last entry: shifted by ``delta``. The logits are what is kept.)
    That needs ``k <= d`` classes and a head whose rows are independent; otherwise no such ``delta`` exists, and
    this is an error (not a silent change)."""
    W, b = weight.detach().double().cpu(), bias.detach().double().cpu()
    delta = torch.linalg.pinv(W) @ b
    err = (W @ delta - b).abs().max().item()
    if err > 1e-9 * max(1.0, b.abs().max().item()):
        raise ValueError(f"the head's bias cannot be folded into ln_f (its {W.shape[0]} rows are not independent: "
                         f"off by {err:.2e}), so transformers' bias-free score layer cannot reproduce it exactly. "
                         "Use save_adapter's own format for this model.")
    return delta


def _merged_weight(m: LinearWithLoRA) -> torch.Tensor:
    """``W + scaling * (A @ B).T``, added in float32 (float64 for float64) and rounded once, as ``merge`` does;
    the layer itself is not changed. A layer that is already merged holds it already."""
    w = m.linear.weight.detach()
    if m.merged:
        return w
    wide = m._wide  # the wrapper's own merge arithmetic, so the export equals merge_lora to the last bit
    return (wide(w) + m._delta(wide(m.lora.A.detach()), wide(m.lora.B.detach()), m.lora.scaling)).to(w.dtype)


def _hf_state(model: nn.Module, lay: HFLayout, *, merge: bool) -> tuple[dict, dict, bool]:
    """The model's weights named and shaped as the transformers class has them (LoRA merged in, or left
    out with ``merge=False``), the head when it stays outside (MiniLM), and whether the head's bias was
    folded into ``ln_f``. Nothing of the model changes."""
    layers = lora_layers(model)
    lora_keys = lora_parameter_names(model)
    inner = {f"{n}.linear.": f"{n}." for n in layers}
    out, head = {}, {}
    for key, t in model.state_dict().items():
        if key in lora_keys or key == "lm_head.weight":  # GPT-2's LM head is tied to wte (transformers ties it)
            continue
        layer = key.rsplit(".", 2)[0] if ".linear." in key else None
        if layer in layers and key == f"{layer}.linear.weight" and merge:
            t = _merged_weight(layers[layer])
        elif layer in layers and not merge and layers[layer].merged:
            raise ValueError("the model's LoRA layers are merged: unmerge_lora(model) before export_base")
        for a, b in inner.items():
            if key.startswith(a):
                key = b + key[len(a):]
                break
        if lay.head and selects(key, [lay.head]) and lay.hf_head is None:
            head[key[len(lay.head) + 1:]] = t.detach().contiguous().cpu()
            continue
        hf = lay.to_hf(key)
        if hf is None:
            raise ValueError(f"{key} has no place in transformers' {lay.hf_class}")
        t = t.detach()
        out[hf] = (t.T if lay.transposed(hf) else t).contiguous().cpu()
    folded = False
    if lay.hf_head and f"{lay.hf_head}.bias" in out:  # GPT-2's score has no bias: fold it into ln_f
        bias = out.pop(f"{lay.hf_head}.bias")
        if torch.count_nonzero(bias):
            delta = fold_head_bias(out[f"{lay.hf_head}.weight"], bias)
            beta = out["transformer.ln_f.bias"]
            out["transformer.ln_f.bias"] = (beta.double() + delta).to(beta.dtype)
            folded = True
    return out, head, folded


def check_export_folder(path, marker: str, files=()) -> None:
    """Can an export go to ``path``? It must be new, an empty folder, or an earlier export (it holds ``marker``);
    a file, or a folder of other files (which the export would replace), raises ``FileExistsError``. Exports
    and ``python -m lora_lab.finetune`` (before it trains) both ask this."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} is a file; export into a folder")
    others = sorted(p.name for p in path.iterdir() if p.name not in files)
    if others and not (path / marker).exists():
        raise FileExistsError(f"{path} holds other files ({others[:5]}), which the export would delete; "
                              "export into a new or empty folder")
    if marker == ADAPTER_CONFIG and (path / marker).exists():
        try:
            is_peft = "peft_type" in json.loads(read_text_file(path / marker))
        except (ValueError, TypeError, OSError):
            is_peft = False
        if not is_peft:
            raise FileExistsError(f"{path} holds a lora_lab adapter (or a damaged config), which a PEFT folder "
                                  "would replace; save the PEFT folder into another folder")


# what exports write: on a re-export these are replaced, and anything else in the folder (a README, a tokenizer
# the user added) is carried over into the new folder
EXPORT_FILES = {HF_CONFIG, HF_WEIGHTS, HEAD_WEIGHTS, ADAPTER_CONFIG, PEFT_WEIGHTS}


def _remove_stale_stages(path: Path) -> None:
    """Staging folders that a killed export left beside ``path`` (hidden, hundreds of MB for a merged GPT-2):
    ours to remove. One writer per folder at a time, as for adapters."""
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.*.tmp.old")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _write_folder(path, files: dict[str, Callable], marker: str) -> Path:
    """Write a whole folder as one step: every file into a hidden folder beside ``path`` first, then that
    folder is renamed into place (an old export at ``path`` is moved aside and deleted only after), so a
    crash leaves the old folder or the new one, never a new config beside old weights. ``path`` must be new,
    empty, or an earlier export (it has ``marker``): a folder of other files is not replaced."""
    path = Path(path).expanduser()
    if path.is_symlink():  # export into the folder the link names; the link itself stays as it is
        path = path.resolve()
    check_export_folder(path, marker, files)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_stages(path)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(stage, permissions(0o777))  # mkdtemp made it private; the folder it becomes follows the umask
    try:
        for name, write in files.items():
            atomic_write(stage / name, write)
        if path.exists():
            for p in path.iterdir():  # the user's own files: copied (the originals stay until the swap)
                if p.name not in EXPORT_FILES and p.name not in files:
                    if p.is_dir() and not p.is_symlink():
                        shutil.copytree(p, stage / p.name, symlinks=True)
                    else:
                        shutil.copy2(p, stage / p.name, follow_symlinks=False)
            swap_folder(stage, path)
        else:
            os.replace(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return path


def _safetensors(tensors: dict, **metadata: str) -> Callable:
    from safetensors.torch import save_file

    return lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", **metadata})


def _json(obj) -> Callable:
    return lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _target_modules(model: nn.Module, lay: HFLayout, hf_layers: list[str]) -> list[str]:
    """The shortest ``target_modules`` that picks exactly our wrapped layers in the transformers model: the
    layers' last names (``["c_attn", "c_fc", "c_proj"]``, as PEFT users write them) when those pick no other
    layer, else the full names."""
    leaves = {n.rsplit(".", 1)[-1] for n in hf_layers}
    candidates = {hf for n, m in model.named_modules()
                  if isinstance(m, (nn.Linear, LinearWithLoRA)) and (hf := lay.to_hf(n)) is not None
                  and not n.endswith(".linear")}
    picked = {c for c in candidates if c.rsplit(".", 1)[-1] in leaves}
    return sorted(leaves) if picked == set(hf_layers) else sorted(hf_layers)


def save_peft_adapter(model: nn.Module, path, *, extra: Iterable[str] = ("classifier",),
                      base_model: str | None = None) -> Path:
    """Write the model's adapter as PEFT writes one; ``peft.PeftModel.from_pretrained(base, path)`` loads it.

    ``base`` is ``transformers.GPT2ForSequenceClassification`` with ``pad_token_id=50256`` (GPT-2 124M from the
    hub: ``from_pretrained("openai-community/gpt2", num_labels=2, pad_token_id=50256)``; any other base, e.g. the
    smoke profile's random GPT-2: the folder :func:`export_base` writes), or ``BertModel`` for MiniLM.

    The folder holds ``adapter_config.json`` (``r``, ``lora_alpha``, ``lora_dropout``, ``use_rslora``,
    ``target_modules``, ``fan_in_fan_out`` for GPT-2's Conv1D layers, ``modules_to_save``, the base model's
    hub id) and ``adapter_model.safetensors`` with PEFT's names and layouts (see the module docstring).

    The head: GPT-2's ``score`` has no bias, ours has one. The head's weight is saved as ``score`` and its bias
    is folded exactly into the final LayerNorm's bias (:func:`fold_head_bias`), which is then saved too
    (``modules_to_save = ["score", "transformer.ln_f"]``): the PEFT model's logits equal ours, and nothing is
    lost. The MiniLM head has no place in ``BertModel``; it goes to ``head.safetensors`` beside the adapter.

    ``extra``: what else to save besides the LoRA layers (module names or globs, as for
    :func:`lora_lab.lora.save_adapter`); each becomes a ``modules_to_save`` entry.
    """
    lay = _layout(model)
    hp = shared_hparams(model)
    layers = lora_layers(model)
    if any(m.merged for m in layers.values()):
        raise ValueError("the model's LoRA layers are merged; call unmerge_lora(model) before save_adapter")
    tensors, hf_layers = {}, []
    for n, m in layers.items():
        hf = lay.to_hf(n)
        if hf is None:
            raise ValueError(f"LoRA layer {n} has no counterpart in transformers' {lay.hf_class}; PEFT cannot hold it")
        hf_layers.append(hf)
        tensors[f"{PEFT_PREFIX}{hf}.lora_A.weight"] = m.lora.A.detach().T.contiguous().cpu()
        tensors[f"{PEFT_PREFIX}{hf}.lora_B.weight"] = m.lora.B.detach().T.contiguous().cpu()
    extra = [extra] if isinstance(extra, str) else list(extra)
    lora_keys = lora_parameter_names(model)
    hf_state, head, folded = _hf_state(model, lay, merge=False)
    to_save, wrapped_extra = set(), []
    for key in model.state_dict():
        if key in lora_keys or not selects(key, extra):
            continue
        if any(key.startswith(f"{n}.linear.") for n in layers):
            wrapped_extra.append(key)
            continue
        hf = lay.to_hf(key)
        if hf is None:
            continue  # the MiniLM head: head.safetensors
        module = hf.rsplit(".", 1)[0]
        to_save.add(module)
        if module == lay.hf_head and folded:  # the head's bias lives in ln_f's bias now
            to_save.add("transformer.ln_f")
    if wrapped_extra:
        raise ValueError(f"extra selects weights of LoRA-wrapped layers ({wrapped_extra[:3]}); PEFT cannot save a "
                         "layer both as LoRA and whole. Leave them out of extra.")
    for module in sorted(to_save):
        for k, t in hf_state.items():
            if k.startswith(module + "."):
                tensors[PEFT_PREFIX + k] = t
    files = {PEFT_WEIGHTS: _safetensors(tensors)}
    if head and selects(lay.head, extra):
        files[HEAD_WEIGHTS] = _safetensors(head)
        # PEFT ignores a safetensors file's metadata: the note that the head is beside it, so a reader can tell
        # a missing head.safetensors from an adapter that never had one
        files[PEFT_WEIGHTS] = _safetensors(tensors, **{HEAD_NOTE: HEAD_WEIGHTS})
    config = {
        "peft_type": "LORA",
        "task_type": lay.task_type,
        "base_model_name_or_path": base_model or (model.hub_id() if hasattr(model, "hub_id") else None),
        "revision": getattr(getattr(model, "config", None), "revision", None),
        "r": hp["rank"],
        "lora_alpha": hp["alpha"],
        "lora_dropout": hp["dropout"],
        "use_rslora": hp["use_rslora"],
        "target_modules": _target_modules(model, lay, hf_layers),
        "fan_in_fan_out": lay.conv1d,
        "bias": "none",
        "modules_to_save": sorted(to_save) or None,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    files[ADAPTER_CONFIG] = _json(config)  # written last into the staging folder; the folder moves as one
    return _write_folder(path, files, marker=ADAPTER_CONFIG)


def _hf_config(model: nn.Module) -> dict:
    """``config.json`` for the transformers class: the model writes it (transformers' own models have one)."""
    return model.hf_config() if hasattr(model, "hf_config") else json.loads(model.config.to_json_string())


def _export(model: nn.Module, path, *, merge: bool) -> Path:
    lay = _layout(model)
    state, head, _ = _hf_state(model, lay, merge=merge)
    config = _hf_config(model)
    config["architectures"] = [lay.hf_class]
    files = {HF_WEIGHTS: _safetensors(state)}
    if head:
        files[HEAD_WEIGHTS] = _safetensors(head)
    files[HF_CONFIG] = _json(config)
    return _write_folder(path, files, marker=HF_CONFIG)


def export_merged(model: nn.Module, path) -> Path:
    """Write the model with its LoRA merged into the weights, in the transformers layout: ``config.json`` +
    ``model.safetensors``, which ``transformers.GPT2ForSequenceClassification.from_pretrained(path)`` loads
    (``GPT2LMHeadModel`` for a language model, ``BertModel`` for MiniLM) with the same outputs, no PEFT needed.

    The model is not changed (the merge is computed on the side, as :meth:`LinearWithLoRA.merge` computes it).
    ``config.json`` sets ``pad_token_id = 50256``: transformers then reads each message's last token that is
    not padding, as our ``lengths`` do (a message must not end in token 50256 itself, which our tokenizer never
    produces). Our head's bias is folded into ``ln_f`` (see :func:`fold_head_bias`), since ``score`` has none.
    The MiniLM head goes to ``head.safetensors``: transformers has no class that mean-pools into it.
    A model without LoRA layers is written as it is.
    """
    return _export(model, path, merge=True)


def export_base(model: nn.Module, path) -> Path:
    """Write the model *without* its LoRA update, in the transformers layout: the base that a PEFT adapter is
    loaded onto when that base is not on the hub (the smoke profile's random GPT-2, a local checkpoint).
    Its head is the model's own (bias folded, as in :func:`export_merged`); PEFT's ``modules_to_save``
    replace it with the adapter's anyway."""
    return _export(model, path, merge=False)


# --- import -------------------------------------------------------------------------------------------
def _read_peft_config(path: Path) -> dict:
    cfg_path = path / ADAPTER_CONFIG
    if not (cfg_path.exists() or cfg_path.is_symlink()):
        raise FileNotFoundError(f"{path} has {PEFT_WEIGHTS} but no {ADAPTER_CONFIG}: PEFT needs both; save the "
                                "adapter again")
    cfg = read_json_file(cfg_path, fix="The adapter's config is damaged: save the adapter again.", expect=dict)
    if cfg.get("peft_type") != "LORA":
        raise AdapterMismatchError(f"{cfg_path} describes a PEFT {cfg.get('peft_type')} adapter; lora_lab loads "
                                   "LoRA adapters only (peft_type 'LORA')")
    unsupported = [f"{k}={cfg[k]!r} ({why})" for k, why in _UNSUPPORTED.items() if cfg.get(k)]
    if cfg.get("bias", "none") != "none":
        unsupported.append(f"bias={cfg['bias']!r} (trained biases of the base layers)")
    if unsupported:
        raise AdapterMismatchError(f"{cfg_path} uses PEFT options lora_lab's LoRA layers cannot represent: "
                                   + "; ".join(unsupported) + ". Only plain LoRA (one rank and alpha) loads here.")
    for k in ("r", "lora_alpha"):
        if k not in cfg:
            raise ValueError(f"{cfg_path} lacks {k!r}: not a PEFT LoRA config")
    try:
        check_hparams(cfg["r"], cfg["lora_alpha"], cfg.get("lora_dropout", 0.0) or 0.0)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    if not isinstance(cfg.get("use_rslora", False), bool):
        raise ValueError(f"{cfg_path}: use_rslora must be true or false, got {cfg['use_rslora']!r}")
    save = cfg.get("modules_to_save")
    if save is not None and (not isinstance(save, list) or not all(isinstance(m, str) and m for m in save)):
        raise ValueError(f"{cfg_path}: modules_to_save must be a list of module names or null, as PEFT writes it "
                         f"(e.g. [\"score\"]), got {save!r}; fix it or save the adapter again")
    return cfg


def _modules_to_save(cfg: dict) -> list[str]:
    return list(cfg.get("modules_to_save") or [])


def _targeted(name: str, target_modules) -> bool:
    """PEFT's rule: a regex string must match the whole module name; a list entry matches the name or its end."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def _check_target_modules(cfg: dict, weights: Path, model: nn.Module, lay: HFLayout, layers_hf: set) -> None:
    """PEFT applies a LoRA tensor only to a module ``target_modules`` selects, and refuses a target that selects
    nothing: do the same, or the model computes something PEFT would not. (Refused by name, never skipped.)"""
    targets = cfg.get("target_modules")
    if targets is None:
        return
    if not isinstance(targets, (str, list)) or (isinstance(targets, list) and not all(isinstance(t, str)
                                                                                      for t in targets)):
        raise AdapterMismatchError(f"{weights.parent / ADAPTER_CONFIG}: target_modules must be a list of module "
                                   f"names or a regex string, got {targets!r}")
    untargeted = sorted(n for n in layers_hf if not _targeted(n, targets))
    if untargeted:
        raise AdapterMismatchError(f"{weights} holds LoRA tensors for {untargeted[:5]}"
                                   f"{' ...' if len(untargeted) > 5 else ''}, which target_modules={targets!r} does "
                                   "not select: PEFT would not apply them. Fix target_modules or the file; nothing "
                                   "was loaded.")
    if isinstance(targets, list):
        ours = [h for n, m in model.named_modules() if isinstance(m, (nn.Linear, LinearWithLoRA))
                and (h := lay.to_hf(n)) is not None]
        unmatched = [t for t in targets if not any(h == t or h.endswith("." + t) for h in ours)]
        if unmatched:
            raise AdapterMismatchError(f"{weights.parent / ADAPTER_CONFIG}: target_modules {unmatched} match no "
                                       f"layer of this {type(model).__name__} (PEFT refuses such a config too); "
                                       "nothing was loaded.")


def _metadata(weights: Path) -> dict:
    """A safetensors file's metadata (its header only)."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return f.metadata() or {}


def read_peft_adapter(path, model: nn.Module) -> AdapterContents:
    """Read and verify a PEFT LoRA folder, and name its tensors as ``model`` names them (GPT-2 or MiniLM).

    What loads: LoRA on Linear/Conv1D layers (``lora_A``/``lora_B``, one rank and alpha, either scaling rule,
    its dropout) and ``modules_to_save`` whose modules exist here. GPT-2's bias-free ``score`` becomes our head
    with a zero bias (exactly what PEFT computes); a ``transformer.ln_f`` saved beside it by
    :func:`save_peft_adapter` (a folded head bias) is unfolded back into the head's bias when its scale equals
    this model's, so the base stays as it was.

    Everything else is an :class:`lora_lab.lora.AdapterMismatchError` that names the offending keys or options,
    before the model is touched: other adapter types (IA3, LoHa, ...), DoRA, per-layer ranks, trained biases,
    LoRA on embeddings, modules this model does not have, and (when :func:`lora_lab.lora.load_adapter` checks
    shapes next) another base size. Never a partial load. Only ``adapter_model.safetensors`` is read
    (PEFT's older ``adapter_model.bin`` is a pickle: convert it with PEFT first).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    lay = _layout(model)
    cfg = _read_peft_config(path)
    weights = path / PEFT_WEIGHTS
    if not weights.is_file():
        bin_hint = ""
        if (path / "adapter_model.bin").exists():
            bin_hint = (" It has adapter_model.bin, PEFT's older pickle format: load it with PEFT and save it again "
                        "with save_pretrained(path) (safetensors is the default).")
        raise FileNotFoundError(f"{path} has a PEFT config but no {PEFT_WEIGHTS}.{bin_hint}")
    try:
        raw = load_file(str(weights))
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(f"{weights} is not a readable safetensors file ({e})") from None
    check_finite(raw, path)

    rank = int(cfg["r"])
    check_config_rank(rank, {k: t.shape[0] for k, t in raw.items() if k.endswith(".lora_A.weight") and t.dim() == 2},
               f"{path / ADAPTER_CONFIG}: r")
    save_modules = _modules_to_save(cfg)
    modules = dict(model.named_modules())
    own = model.state_dict()
    tensors, sources, unknown, missing_here, lora_ab = {}, {}, [], [], {}
    for key, t in raw.items():
        if not key.startswith(PEFT_PREFIX):
            unknown.append(key)
            continue
        hf = key[len(PEFT_PREFIX):]
        module, _, leaf = hf.rpartition(".")
        if module.endswith((".lora_A", ".lora_B")) and leaf == "weight":
            layer_hf, ab = module.rsplit(".", 1)
            ours = lay.from_hf(layer_hf)
            if ours not in modules or not isinstance(modules[ours], (nn.Linear, LinearWithLoRA)):
                missing_here.append(key)
                continue
            if t.dim() != 2 or t.shape[0 if ab == "lora_A" else 1] != rank:
                unknown.append(f"{key} {tuple(t.shape)} (rank {rank} expected from r)")
                continue
            lora_ab.setdefault(ours, {})[ab] = key
            name = f"{ours}.lora.{'A' if ab == 'lora_A' else 'B'}"
            tensors[name], sources[name] = t.T.contiguous(), key
        elif any(module == m or module.endswith("." + m) for m in save_modules):
            ours = lay.from_hf(hf)
            if ours not in own:
                missing_here.append(key)
                continue
            tensors[ours], sources[ours] = (t.T if lay.transposed(hf) else t).contiguous(), key
        else:
            unknown.append(key)  # DoRA magnitudes, embedding LoRA, an adapter name in the key, ...
    if unknown:
        raise AdapterMismatchError(f"{weights} holds tensors lora_lab cannot map onto LoRA layers: {unknown[:6]}"
                                   f"{' ...' if len(unknown) > 6 else ''} ({len(unknown)} in all). Only lora_A/lora_B "
                                   "of Linear/Conv1D layers and modules_to_save load here; nothing was loaded.")
    if missing_here:
        raise AdapterMismatchError(f"{weights} has tensors for modules this {type(model).__name__} does not have: "
                                   f"{missing_here[:6]}{' ...' if len(missing_here) > 6 else ''} "
                                   f"({len(missing_here)} in all): another architecture or size? Nothing was loaded.")
    half = [f"{n} has only {next(iter(ab))}" for n, ab in lora_ab.items() if len(ab) != 2]
    if half:
        raise AdapterMismatchError(f"{weights}: {half[:5]}; each LoRA layer needs lora_A and lora_B")
    if not lora_ab:
        raise AdapterMismatchError(f"{weights} holds no LoRA layers (no lora_A/lora_B tensors)")
    _check_target_modules(cfg, weights, model, lay, {lay.to_hf(n) for n in lora_ab})

    if lay.hf_head:  # GPT-2: score has no bias; ours gets the one that gives PEFT's logits
        w_key, b_key = f"{lay.head}.weight", f"{lay.head}.bias"
        if w_key in tensors and b_key in own:
            bias = torch.zeros_like(own[b_key], device="cpu")
            sources[b_key] = "zero: PEFT's score layer has no bias"
            ln_w, ln_b = "transformer.ln_f.weight", "transformer.ln_f.bias"
            if ln_b in tensors and torch.equal(tensors.get(ln_w, own[ln_w]).cpu(), own[ln_w].cpu()):
                delta = tensors.pop(ln_b).double() - own[ln_b].detach().double().cpu()
                tensors.pop(ln_w, None)
                sources.pop(ln_w, None)
                bias = (tensors[w_key].double() @ delta).to(bias.dtype)
                sources[b_key] = sources.pop(ln_b)
            tensors[b_key] = bias
    head_file = path / HEAD_WEIGHTS
    if lay.head and lay.hf_head is None and (head_file.exists() or _metadata(weights).get(HEAD_NOTE)):
        if not head_file.is_file():  # saved with its head (the weights say so), which is gone or not a file
            raise FileNotFoundError(f"{path} was saved with its head in {HEAD_WEIGHTS}, which is missing or not a "
                                    "file: the model would run with an untrained head. Save the adapter again.")
        for k, t in load_file(str(check_regular_file(head_file))).items():
            tensors[f"{lay.head}.{k}"], sources[f"{lay.head}.{k}"] = t, f"{HEAD_WEIGHTS}:{k}"
        check_finite(tensors, path)
    hparams = {"rank": rank, "alpha": plain_number(cfg["lora_alpha"]), "use_rslora": bool(cfg.get("use_rslora", False)),
               "dropout": float(cfg.get("lora_dropout", 0.0) or 0.0)}
    lora_names = {f"{n}.lora.{ab}" for n in lora_ab for ab in "AB"}
    extra_modules = sorted({k.rsplit(".", 1)[0] for k in tensors if k not in lora_names})  # in our names
    config = {**cfg, "format": "peft", "extra_modules": extra_modules}  # as lora_lab's own config says it
    return AdapterContents(path=path, config=config, layers=sorted(lora_ab), hparams=hparams,
                           tensors=tensors, sources=sources)
