"""lora_lab's adapter folder: save (one atomic commit),
read and verify, check that it fits a model, load (all or nothing); PEFT folders through
:mod:`lora_lab.lora.interop`."""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Iterable

from torch import nn

from ..utils.files import (
    DataIntegrityError,
    atomic_write,
    check_regular_file,
    folder_problem,
    read_json_file,
    read_text_file,
)
from .contents import (
    ADAPTER_CONFIG,
    ADAPTER_FORMAT,
    ADAPTER_WEIGHTS,
    SCALING_RULES,
    SHA256_PATTERN,
    AdapterContents,
    AdapterMismatchError,
    check_config_rank,
    check_finite,
    lora_a_rank,
)
from .interop import PEFT_WEIGHTS, read_peft_adapter, save_peft_adapter
from .layer import check_hparams, plain_number
from .model import (
    compiled_original,
    lora_layers,
    lora_parameter_names,
    lora_state_dict,
    selects,
    shared_hparams,
    wrapper_for,
)

__all__ = ["save_adapter", "load_adapter", "read_adapter", "check_adapter_fits", "ADAPTER_FORMATS"]


def _base_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "name", None) or getattr(cfg, "_name_or_path", None) or None


def _base_weights(model: nn.Module) -> tuple[str | None, str | None]:
    """(revision, sha256) of the pretrained weights the model was loaded from, when known
    (:func:`lora_lab.models.gpt2.load_pretrained` records them in ``model.config``)."""
    cfg = getattr(model, "config", None)
    return getattr(cfg, "revision", None), getattr(cfg, "weights_sha256", None)


def _pending(path: Path, sha: str) -> Path:
    """Where save_adapter puts new weights before it commits them: a hidden file named by their sha256."""
    return path / f".adapter.{sha}.safetensors"


def _remove_leftovers(path: Path, keep: set[str]) -> None:
    """Delete what interrupted saves left in an adapter folder (hidden weights and ``.tmp`` files)."""
    for f in path.iterdir():
        if f.name in keep or not f.name.startswith("."):
            continue
        if f.name.endswith(".tmp") or (f.name.startswith(".adapter.") and f.name.endswith(".safetensors")):
            try:
                f.unlink()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass


ADAPTER_FORMATS = ("lora_lab", "peft")


def save_adapter(model: nn.Module, path, *, format: str = "lora_lab", extra: Iterable[str] = ("classifier",),
                 base_model: str | None = None, task: str | None = None) -> Path:
    """Write the adapter (LoRA weights + extra modules such as the new head) to a folder.

    ``format="lora_lab"`` (default): ``adapter.safetensors`` and ``adapter_config.json`` (rank, alpha, scaling
    rule, dropout, wrapped layers, base model, the exact base weights when known, the weights' sha256), read
    back by :func:`load_adapter`.

    ``format="peft"``: the folder Hugging Face PEFT writes, ``adapter_model.safetensors`` and its
    ``adapter_config.json``, which ``peft.PeftModel.from_pretrained`` loads onto ``transformers``' GPT-2
    (or BERT for the MiniLM track); see :func:`lora_lab.lora.save_peft_adapter` for what maps onto what.

    Every LoRA layer must share one rank, alpha, scaling rule and dropout (:func:`shared_hparams`); a model
    whose layers differ is an error, not a file that records the first layer's values for all.
    ``extra``: module names or globs (see :func:`selects`), the same rule :func:`mark_only_lora_trainable` uses.

    The folder is updated as one step. Overwriting an adapter with two separate file writes is not
    safe: a ``kill -9`` or a full disk between them would leave new weights beside the old config
    (the old adapter destroyed, the new one not loadable). So:

    1. the weights are serialised and hashed in memory;
    2. they are written (atomically) to a hidden file named by that hash, ``.adapter.<sha256>.safetensors``;
       the adapter in the folder is still the old one;
    3. the config, which names that hash, is written atomically. **This is the commit point**: before
       it the folder holds the old adapter, after it the new one;
    4. the hidden file is renamed to ``adapter.safetensors`` and leftovers of interrupted saves are removed.

    If a crash falls between 3 and 4, :func:`load_adapter` finds the committed weights by their hash (it never
    changes the folder: the next save finishes the move). One writer per folder at a time; any number of readers.
    """
    from safetensors.torch import save as serialize

    if format not in ADAPTER_FORMATS:
        raise ValueError(f"format must be one of {ADAPTER_FORMATS}, got {format!r}: 'lora_lab' is read by "
                         "load_adapter, 'peft' by Hugging Face PEFT (and by load_adapter)")
    for name, value in (("base_model", base_model), ("task", task)):  # what is saved must load: checked now
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string (or None), got {value!r}; e.g. {name}='gpt2'")
    model = compiled_original(model)
    path = Path(path).expanduser()
    problem = folder_problem(path, writable=False)
    if problem:  # a file in the way, checked before anything is written (it used to be a bare FileExistsError)
        raise FileExistsError(f"save_adapter writes a folder at {path}, but {problem}; choose another path, or "
                              "move the file away")
    if format == "peft":
        return save_peft_adapter(model, path, extra=extra, base_model=base_model)
    hp = shared_hparams(model)
    layers = lora_layers(model)
    if any(m.merged for m in layers.values()):
        raise ValueError("the model's LoRA layers are merged; call unmerge_lora(model) before save_adapter")
    tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(model, extra).items()}
    data = serialize(tensors, metadata={"format": "pt"})
    sha = hashlib.sha256(data).hexdigest()
    revision, base_sha = _base_weights(model)
    config = {
        "format": ADAPTER_FORMAT,
        "base_model": base_model or _base_name(model),
        "base_revision": revision,
        "base_weights_sha256": base_sha,
        "task": task,
        "rank": hp["rank"],
        "alpha": hp["alpha"],
        "scaling_rule": "alpha/sqrt(rank)" if hp["use_rslora"] else "alpha/rank",
        "dropout": hp["dropout"],
        "layers": sorted(layers),
        "extra_modules": sorted(set([extra] if isinstance(extra, str) else extra)),
        "num_tensors": len(tensors),
        "sha256": sha,
    }
    path.mkdir(parents=True, exist_ok=True)
    pending = _pending(path, sha)
    atomic_write(pending, lambda tmp: Path(tmp).write_bytes(data))  # 2.
    try:
        atomic_write(path / ADAPTER_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))  # 3.
    except BaseException:
        pending.unlink(missing_ok=True)  # not committed: the old adapter stays as it was
        raise
    os.replace(pending, path / ADAPTER_WEIGHTS)  # 4.
    _remove_leftovers(path, keep={ADAPTER_WEIGHTS, ADAPTER_CONFIG})
    return path


def _validated_config(cfg: dict, cfg_path: Path) -> dict:
    """Check every field load_adapter relies on, before the model is touched (that it is a JSON object,
    read_json_file's ``expect=dict`` has checked)."""
    where = f"{cfg_path}"
    required = ("rank", "alpha", "scaling_rule", "layers", "sha256")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"{where} lacks {missing}: it was not written by save_adapter, or was edited. "
                         "Save the adapter again.")
    if cfg.get("format", ADAPTER_FORMAT) != ADAPTER_FORMAT:
        raise ValueError(f"{where} has format {cfg['format']!r}; this version of lora_lab reads {ADAPTER_FORMAT!r}")
    try:
        check_hparams(cfg["rank"], cfg["alpha"], cfg.get("dropout", 0.0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if cfg["scaling_rule"] not in SCALING_RULES:
        raise ValueError(f"{where}: scaling_rule must be one of {sorted(SCALING_RULES)}, got {cfg['scaling_rule']!r}")
    layers = cfg["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) and n for n in layers):
        raise ValueError(f"{where}: layers must be a non-empty list of module names, got {layers!r}")
    globs = [n for n in layers if any(c in n for c in "*?[]")]
    if globs:
        raise ValueError(f"{where}: layers must be exact module names (as in model.named_modules()), not "
                         f"patterns: {globs[:5]}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{where}: layers lists some names twice")
    extra = cfg.get("extra_modules", [])
    if not isinstance(extra, list) or not all(isinstance(n, str) for n in extra):
        raise ValueError(f"{where}: extra_modules must be a list of module names, got {extra!r}")
    if not isinstance(cfg["sha256"], str) or not SHA256_PATTERN.fullmatch(cfg["sha256"]):
        raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits, got {cfg['sha256']!r}")
    for key in ("base_model", "base_revision", "base_weights_sha256", "task"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise ValueError(f"{where}: {key} must be a string or null, got {cfg[key]!r}")
    return {**cfg, "rank": int(cfg["rank"]), "alpha": plain_number(cfg["alpha"]),
            "dropout": float(cfg.get("dropout", 0.0)), "extra_modules": extra}


def _read_adapter(path: Path) -> tuple[dict, bytes]:
    """The folder's validated config and the weights' bytes (sha256 checked). Touches no model."""
    cfg_path, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not (cfg_path.exists() or cfg_path.is_symlink()):
        raise FileNotFoundError(f"{path} is not an adapter folder: expected {ADAPTER_CONFIG} and "
                                f"{ADAPTER_WEIGHTS} in it (write one with save_adapter)")
    for _ in range(5):  # a writer may be between its steps (a new config, its weights not yet renamed): look again
        cfg = read_json_file(cfg_path, fix="The adapter's config is damaged: save the adapter again.", expect=dict)
        cfg = _validated_config(cfg, cfg_path)
        if not (weights.is_file() or any(path.glob(".adapter.*.safetensors"))):
            raise FileNotFoundError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}: the adapter's weights "
                                    "are missing. Save the adapter again.")
        data = weights.read_bytes() if weights.is_file() else b""
        actual = hashlib.sha256(data).hexdigest()
        if actual == cfg["sha256"]:
            return cfg, data
        # a save interrupted after its commit point (or still running): the committed weights wait under their
        # hash. They are read from there; a reader never changes the folder (the next save tidies it up)
        try:
            blob = _pending(path, cfg["sha256"]).read_bytes()
        except OSError:
            blob = b""
        if hashlib.sha256(blob).hexdigest() == cfg["sha256"]:
            return cfg, blob
        time.sleep(0.05)
    # the package's one checksum error (lora_lab.utils.files.verify_sha256 raises it too). verify_sha256 itself is
    # not called: it hashes a path, and these bytes, already read, are the ones that get loaded
    raise DataIntegrityError(f"adapter weights {weights} are corrupt or were changed: sha256 {actual}, "
                             f"expected {cfg['sha256']} from its config. Save the adapter again.")


def read_adapter(path) -> AdapterContents:
    """Read and verify a folder written by :func:`save_adapter` (``format="lora_lab"``): the config's fields,
    the weights' sha256 (or those of a save interrupted after its commit point, read without changing the
    folder), that the weights parse and are finite. Touches no model; raises ``ValueError`` (or
    ``FileNotFoundError``) naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load as deserialize

    path = Path(path)
    cfg, data = _read_adapter(path)
    try:
        tensors = deserialize(data)
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{path / ADAPTER_WEIGHTS} is not a readable safetensors file ({e})") from None
    check_finite(tensors, path)
    ranks = {n: lora_a_rank(tensors[f"{n}.lora.A"]) for n in cfg["layers"] if f"{n}.lora.A" in tensors}
    check_config_rank(cfg["rank"], {n: r for n, r in ranks.items() if r is not None}, f"{path / ADAPTER_CONFIG}: rank")
    hparams = {"rank": cfg["rank"], "alpha": cfg["alpha"], "use_rslora": SCALING_RULES[cfg["scaling_rule"]],
               "dropout": cfg["dropout"]}
    return AdapterContents(path=path, config=cfg, layers=list(cfg["layers"]), hparams=hparams, tensors=tensors,
                           base_model=cfg.get("base_model"), base_revision=cfg.get("base_revision"),
                           base_weights_sha256=cfg.get("base_weights_sha256"))


def _adapter_format(path: Path) -> str:
    """``"peft"`` when the folder's config was written by PEFT (it has ``peft_type``), else ``"lora_lab"``
    (whose reader then reports anything that is wrong with the folder)."""
    if (path / ADAPTER_CONFIG).exists():
        check_regular_file(path / ADAPTER_CONFIG, 1 << 20)  # a FIFO or /dev/zero: an error now, not a hang
    try:
        cfg = json.loads(read_text_file(path / ADAPTER_CONFIG))
    except (OSError, ValueError):  # a damaged config: the weights file says whose it is (its reader names the fault)
        cfg = None
    if isinstance(cfg, dict):
        return "peft" if "peft_type" in cfg else "lora_lab"
    return "peft" if (path / PEFT_WEIGHTS).exists() and not (path / ADAPTER_WEIGHTS).exists() else "lora_lab"


def check_adapter_fits(model: nn.Module, adapter: AdapterContents, *, base_model: str | None = None) -> list[str]:
    """Check that ``adapter`` fits ``model``, without touching it; returns the layers that still need wrapping
    (empty when the model is already wrapped at exactly the adapter's layers: switching tasks).

    Raises :class:`AdapterMismatchError` naming the problem: another base model, other layers, or a tensor
    whose name or shape the model does not have. Warns when the adapter records the exact base weights it was
    trained on and this model's differ."""
    path = adapter.path
    model_base = base_model or _base_name(model)
    if adapter.base_model and model_base and adapter.base_model != model_base:
        raise AdapterMismatchError(f"adapter {path} was trained on base model {adapter.base_model!r}, "
                                   f"but this model is {model_base!r}; load it onto {adapter.base_model!r}")
    revision, model_sha = _base_weights(model)
    if adapter.base_weights_sha256 and model_sha and adapter.base_weights_sha256 != model_sha:
        warnings.warn(f"adapter {path} was trained on base weights with sha256 {adapter.base_weights_sha256} "
                      f"(revision {adapter.base_revision}), but this model's weights have sha256 {model_sha} "
                      f"(revision {revision}). It loads, but its outputs will differ from those measured in "
                      "training; load the same base weights to reproduce them.", UserWarning, stacklevel=3)
    names, rank = adapter.layers, adapter.hparams["rank"]
    layers = lora_layers(model)
    own = model.state_dict()
    if layers:  # already wrapped: the adapter must cover exactly these layers (switching tasks)
        if sorted(layers) != sorted(names):
            missing = sorted(set(names) - set(layers))
            extra_l = sorted(set(layers) - set(names))
            raise AdapterMismatchError(f"adapter {path} does not fit this model's LoRA layers: "
                                       f"in the adapter only: {missing[:5]}, in the model only: {extra_l[:5]}")
        if any(m.merged for m in layers.values()):
            raise ValueError("unmerge_lora(model) before loading another adapter")
        expected = {k: tuple(own[k].shape) for k in lora_parameter_names(model)}
        to_wrap = []
    else:
        modules = dict(model.named_modules())
        not_found = [n for n in names if n not in modules]
        not_linear = [n for n in names if n in modules and wrapper_for(modules[n]) is None]
        if not_found or not_linear:
            raise AdapterMismatchError(f"adapter {path} does not fit this model: layers not in the model: "
                                       f"{not_found[:5]}; not an nn.Linear or nn.Conv2d: {not_linear[:5]}")
        expected = {}
        for n in names:
            shapes = wrapper_for(modules[n]).lora_shapes(modules[n], rank)
            expected.update({f"{n}.lora.{k}": shape for k, shape in shapes.items()})
        to_wrap = list(names)
    problems = [f"{k}: missing from the adapter" for k in expected if k not in adapter.tensors]
    declared = adapter.config.get("extra_modules")  # lora_lab's format says which modules besides LoRA it holds
    for k, v in adapter.tensors.items():
        want = expected.get(k, tuple(own[k].shape) if k in own else None)
        name = f"{k} (file: {adapter.sources[k]})" if k in adapter.sources else k
        under = next((n for n in to_wrap if k.startswith(n + ".")), None)
        if k not in expected and under is not None:
            problems.append(f"{name}: inside {under}, which the adapter wraps with LoRA, so this weight would be "
                            "dropped")
        elif k not in expected and isinstance(declared, list) and not selects(k, declared):
            problems.append(f"{name}: outside the LoRA layers and the modules the config declares "
                            f"(extra_modules {declared}), so loading it would change the base model")
        elif want is None:
            problems.append(f"{name}: not in model")
        elif tuple(v.shape) != want:
            problems.append(f"{name}: adapter {tuple(v.shape)} vs model {want}")
        elif not v.is_floating_point() and (k in expected or own[k].is_floating_point()):
            # load_state_dict would cast the values silently (a bool becomes 0.0 or 1.0)
            problems.append(f"{name}: holds {str(v.dtype).removeprefix('torch.')} values where the model has "
                            "floating-point weights (the file was edited or not written by save_adapter; save the "
                            "adapter again)")
    if problems:
        raise AdapterMismatchError(f"adapter {path} does not fit this model: " + "; ".join(problems[:8]))
    return to_wrap


def _apply_adapter(model: nn.Module, adapter: AdapterContents, to_wrap: list[str]) -> None:
    """Wrap ``to_wrap``, give every LoRA layer the adapter's alpha, rule and dropout, load the tensors; if
    anything fails on the way, undo all of it."""
    hp = adapter.hparams
    modules = dict(model.named_modules())
    layers = lora_layers(model)
    own = model.state_dict()
    before = {k: own[k].clone() for k in adapter.tensors if k in own}
    old = {n: (m.lora.alpha, m.lora.use_rslora, m.lora.dropout) for n, m in layers.items()}
    wrapped = []
    try:
        for n in to_wrap:
            model.set_submodule(n, wrapper_for(modules[n])(modules[n], hp["rank"], hp["alpha"],
                                                              dropout=hp["dropout"], use_rslora=hp["use_rslora"]))
            wrapped.append(n)
        for m in lora_layers(model).values():
            m.lora.set_hparams(alpha=hp["alpha"], use_rslora=hp["use_rslora"], dropout=hp["dropout"])
        unexpected = model.load_state_dict(adapter.tensors, strict=False).unexpected_keys
        if unexpected:  # checked above; this is the last line of defence against a silent partial load
            raise AdapterMismatchError(f"adapter {adapter.path}: {unexpected[:5]} match nothing in the model; "
                                       "nothing was loaded")
    except BaseException:
        for n in wrapped:
            model.set_submodule(n, modules[n])
        for n, (alpha, use_rslora, dropout) in old.items():
            layers[n].lora.alpha, layers[n].lora.use_rslora, layers[n].lora.dropout = alpha, use_rslora, dropout
        model.load_state_dict(before, strict=False)
        raise


def load_adapter(model: nn.Module, path, *, base_model: str | None = None) -> dict:
    """Load an adapter folder onto ``model`` (in place): one written by :func:`save_adapter`, or a LoRA
    adapter written by Hugging Face PEFT (``adapter_model.safetensors``; see
    :func:`lora_lab.lora.read_peft_adapter` for what maps and what is refused).

    A base model that has no LoRA layers yet is wrapped first, with the adapter's rank, alpha, scaling
    rule, dropout and layers (exact module names). Loading a second adapter onto the same wrapped model
    swaps tasks: its alpha, rule and dropout replace the layers' own.

    Three steps, and the model is touched only in the last:

    1. read and verify the folder (:func:`read_adapter`): the config (keys, types, rank and alpha, the
       scaling rule, layer names), the weights' sha256, that every tensor is finite;
    2. check it fits (:func:`check_adapter_fits`): the base model, the layers, every tensor's name and
       shape;
    3. apply it, undoing everything if anything still fails.

    :class:`AdapterMismatchError` when the adapter was made for another base model, other layers, or other
    shapes; ``ValueError`` when the folder is damaged. An adapter that records the exact base weights it was
    trained on (their sha256) warns when loaded onto different weights: it will run, but its outputs will
    not be the ones measured in training. Returns the adapter's config.
    """
    path = Path(path).expanduser()
    model = compiled_original(model)
    if _adapter_format(path) == "peft":
        adapter = read_peft_adapter(path, model)
    else:
        adapter = read_adapter(path)
    to_wrap = check_adapter_fits(model, adapter, base_model=base_model)
    _apply_adapter(model, adapter, to_wrap)
    return adapter.config
