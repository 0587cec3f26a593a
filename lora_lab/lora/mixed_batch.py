"""Many adapters on one base, at the same time: a batch in which every row uses its own adapter.

A server that holds one frozen base model and many LoRA adapters (one per task, or per customer) gets
requests for different adapters mixed together. Three ways to answer them:

* **swap**: load (or merge) the adapter each request needs, then run that request alone. Every switch
  costs a load, and requests cannot share a batch;
* **copies**: keep one merged model per adapter. No switching, but N adapters cost N whole models;
* **mixed batch** (this module): put requests for different adapters in *one* batch. Every wrapped layer
  computes the frozen part once for the whole batch and adds, to each row, that row's own low-rank path:

      y_i = W x_i + b + scaling_k * (x_i @ A_k @ B_k)         k = the adapter of row i

  The frozen ``W`` (almost all of the compute and memory) is shared; only the small ``A_k @ B_k`` differ.
  Rows are grouped by adapter, so each adapter's low-rank path runs once per layer on its own rows: the
  same arithmetic as running that adapter alone. PEFT's mixed-batch inference does this
  (``model(..., adapter_names=[...])``, ``_mixed_batch_forward`` in ``peft/tuners/lora/layer.py``) by
  gathering each adapter's rows in every layer. Here the batch is sorted by adapter once, on the way in,
  so that in every layer an adapter's rows are one contiguous slice (a view: nothing is gathered or
  scattered per layer), and the outputs are put back in the caller's order on the way out. Multi-LoRA
  servers (Punica's and S-LoRA's "segmented" kernels, vLLM) sort the same way and fuse the per-adapter
  matmuls into one kernel.

Each adapter in this course also trains its own classification head (``extra=("classifier",)`` in
:func:`lora_lab.lora.save_adapter`); that is not a low-rank path, so each row is sent through its own
adapter's copy of the head (as PEFT does with ``modules_to_save``). Row 0's slot, ``"base"``, is the base
model with no adapter and its own head.

    mixed = MixedAdapterModel(base, {"spam": "adapters/spam", "question": "adapters/question"})
    logits = mixed(input_ids, lengths, adapters=["spam", "question", "base", "spam"])   # one per row
"""
from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .adapter_file import load_adapter
from .contents import AdapterMismatchError
from .layer import LoRALayer
from .model import lora_layers

__all__ = ["BASE", "MixedAdapterModel", "MultiLoRALinear", "PerRowModule", "serving_memory", "tensor_bytes"]

BASE = "base"  # the name (slot 0) of "no adapter": the base model's own output, with its own head


class _Route:
    """Which rows of the batch now running use which adapter. :meth:`MixedAdapterModel.forward` sets it once
    per batch and every per-row layer reads it, so the grouping is worked out once, not once per layer."""

    def __init__(self):
        self.batch: int | None = None
        self.groups: list[tuple[int, int, int]] | None = None  # (slot, start, end): its rows are start:end

    def current(self, x: torch.Tensor, where: str) -> list[tuple[int, int, int]]:
        if self.groups is None:
            raise RuntimeError(f"{where} serves a mixed batch and needs to know each row's adapter: call the "
                               "MixedAdapterModel, model(input_ids, lengths, adapters=[...]), not its base directly")
        if x.dim() == 0 or x.shape[0] != self.batch:
            raise RuntimeError(f"{where} got an input shaped {tuple(x.shape)}, but the batch has {self.batch} rows: "
                               "a mixed batch needs every adapted layer to see the batch in its first dimension")
        return self.groups


class MultiLoRALinear(nn.Module):
    """One frozen ``nn.Linear`` shared by every adapter, plus one :class:`LoRALayer` per adapter that adapts it.

    ``forward`` computes ``linear(x)`` for the whole batch once, then adds each adapter's
    ``scaling * x[rows] @ A @ B`` to the rows that use it (one slice of the sorted batch). Adapters need not
    agree on rank or alpha (each keeps its own ``LoRALayer``), and an adapter that did not wrap this layer
    (another ``target``) adds nothing here, exactly as when it runs alone.
    """

    def __init__(self, linear: nn.Linear, loras: Mapping[int, LoRALayer], route: _Route, name: str = ""):
        super().__init__()
        self.linear = linear
        self.loras = nn.ModuleDict({str(slot): lora for slot, lora in loras.items()})
        self._route, self._name = route, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        for slot, start, end in self._route.current(x, self._name or "a MultiLoRALinear"):
            lora = self.loras[str(slot)] if str(slot) in self.loras else None
            if lora is None:  # the base, or an adapter that did not adapt this layer
                continue
            if end - start == len(x):  # the whole batch uses this adapter: what LinearWithLoRA computes
                out = out + lora(x)
            else:  # add the update to this adapter's rows only: a slice, so a view, updated in place
                out[start:end] += lora(x[start:end])
        return out

    def extra_repr(self) -> str:
        ranks = {int(s): m.rank for s, m in self.loras.items()}
        return f"adapters (slot: rank)={ranks}"


class PerRowModule(nn.Module):
    """A module each adapter has its own copy of (its classification head): row ``i`` goes through the copy of
    its adapter. Not low-rank, so nothing is shared; rows are grouped by adapter and each copy runs once on
    its rows (PEFT's ``modules_to_save`` in a mixed batch does the same). Slots without a copy of their own,
    the base included, use the base model's module. Only the first input is split by rows; any other
    arguments go unchanged to every copy."""

    def __init__(self, base_module: nn.Module, own: Mapping[int, nn.Module], route: _Route, name: str = ""):
        super().__init__()
        self.base_module = base_module
        self.copies = nn.ModuleDict({str(slot): m for slot, m in own.items()})
        self._route, self._name = route, name

    def _for(self, slot: int) -> nn.Module:
        return self.copies[str(slot)] if str(slot) in self.copies else self.base_module

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        groups = self._route.current(x, self._name or "a PerRowModule")
        if len(groups) == 1:
            return self._for(groups[0][0])(x, *args, **kwargs)
        return torch.cat([self._for(slot)(x[start:end], *args, **kwargs) for slot, start, end in groups])


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"adapter names must be non-empty strings, got {name!r}")
    if name == BASE:
        raise ValueError(f"{BASE!r} is the name of slot 0, the base model without an adapter; give the adapter "
                         "another name")
    return name


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


class MixedAdapterModel(nn.Module):
    """A frozen base model serving several adapters at once: ``model(*inputs, adapters=[one per row])``.

    Args:
        base: the base model **without** adapters (e.g. a fresh ``backbone.classifier()`` with the base's
            weights and head). It is changed in place, like :func:`~lora_lab.lora.replace_linear_with_lora`:
            every layer some adapter wraps becomes a :class:`MultiLoRALinear`, every extra module an adapter
            saved (its head) a :class:`PerRowModule`. Its weights are not copied: they are the one shared base.
        adapters: ``{name: adapter folder}`` written by :func:`~lora_lab.lora.save_adapter`. Each is loaded
            with :func:`~lora_lab.lora.load_adapter` onto a scratch copy of the base, so every check it makes
            (base model, layer names, shapes, checksum) applies; then only its LoRA layers and its extra
            modules are kept. Adapters may differ in rank, alpha and target layers.

    Slot 0 is :data:`BASE`, no adapter; adapter ``k`` (in the order given) is slot ``k``. ``adapters=`` takes
    names, slot numbers or a 1-D integer tensor. It is an inference model: it is put in ``eval()`` mode and
    nothing in it requires a gradient.
    """

    def __init__(self, base: nn.Module, adapters: Mapping[str, str | Path]):
        super().__init__()
        if not isinstance(adapters, Mapping) or not adapters:
            raise ValueError("give the adapters as a non-empty mapping {name: adapter folder}, e.g. "
                             "{'spam': 'adapters/spam'}")
        if lora_layers(base):
            raise ValueError(f"the base model already has {len(lora_layers(base))} LoRA layers: pass the base "
                             "model without adapters (e.g. a fresh classifier with the base weights), and give "
                             "every adapter as a folder written by save_adapter")
        names = [_check_name(n) for n in adapters]
        self.names: tuple[str, ...] = (BASE, *names)
        self.configs: dict[str, dict] = {}
        loras: dict[str, dict[int, LoRALayer]] = {}  # layer name -> slot -> its LoRALayer
        extras: dict[str, dict[int, nn.Module]] = {}  # module name -> slot -> that adapter's copy
        for slot, (name, path) in enumerate(adapters.items(), start=1):
            scratch = copy.deepcopy(base)
            try:
                cfg = load_adapter(scratch, path)
            except AdapterMismatchError as e:
                raise AdapterMismatchError(f"adapter {name!r} does not fit the base model: {e}") from None
            self.configs[name] = cfg
            for layer_name, layer in lora_layers(scratch).items():
                loras.setdefault(layer_name, {})[slot] = layer.lora
            for module_name in cfg["extra_modules"]:
                try:
                    extras.setdefault(module_name, {})[slot] = scratch.get_submodule(module_name)
                except AttributeError:
                    raise AdapterMismatchError(f"adapter {name!r} saved the extra module {module_name!r}, which "
                                               "the base model does not have") from None
            del scratch  # what we keep (LoRALayers, extra modules) holds no reference to the copied base weights
        # a module that one adapter replaces whole and another adapts with LoRA (e.g. the head) cannot be both
        clash = [(e, n) for e in extras for n in loras if _overlaps(e, n)]
        clash += [(e, n) for e in extras for n in extras if n != e and _overlaps(e, n)]
        if clash:
            raise ValueError(f"the extra module {clash[0][0]!r} contains (or sits inside) {clash[0][1]!r}, which "
                             "another adapter also changes: a mixed batch can give a module per-row copies or "
                             "per-row LoRA paths, not both. Serve these adapters from separate models.")
        self._route = _Route()
        for layer_name, by_slot in loras.items():
            linear = base.get_submodule(layer_name)
            base.set_submodule(layer_name, MultiLoRALinear(linear, by_slot, self._route, layer_name))
        for module_name, by_slot in extras.items():
            original = base.get_submodule(module_name)
            base.set_submodule(module_name, PerRowModule(original, by_slot, self._route, module_name))
        self.base = base
        self.requires_grad_(False)
        self.eval()

    def slots(self, adapters, batch: int) -> torch.Tensor:
        """The slot of every row as a 1-D tensor, from names, slot numbers or a tensor; bad input is an error
        that says what is wrong (an unknown name, a slot out of range, one entry per row missing)."""
        known = ", ".join(f"{i} = {n!r}" for i, n in enumerate(self.names))
        if torch.is_tensor(adapters):
            if adapters.dim() != 1 or adapters.dtype.is_floating_point or adapters.dtype.is_complex \
                    or adapters.dtype == torch.bool:
                raise TypeError(f"adapters as a tensor must be 1-D integer slots, got {tuple(adapters.shape)} "
                                f"{adapters.dtype}")
            items = adapters.tolist()
        elif isinstance(adapters, (str, bytes)) or not isinstance(adapters, Sequence):
            raise TypeError(f"adapters must give one adapter per row (a list of names or slots), got "
                            f"{type(adapters).__name__}; for a whole batch on one adapter use [name] * batch")
        else:
            items = list(adapters)
        if len(items) != batch:
            raise ValueError(f"got {len(items)} adapter choices for a batch of {batch} rows: give exactly one "
                             f"per row ({known})")
        out = []
        for i, a in enumerate(items):
            if isinstance(a, str):
                if a not in self.names:
                    raise KeyError(f"row {i} asks for adapter {a!r}, which this model does not hold; it holds "
                                   f"{known}")
                out.append(self.names.index(a))
            elif isinstance(a, numbers.Integral) and not isinstance(a, bool):
                if not 0 <= a < len(self.names):
                    raise IndexError(f"row {i} asks for slot {a}, out of range: this model has slots 0 to "
                                     f"{len(self.names) - 1} ({known})")
                out.append(int(a))
            else:
                raise TypeError(f"row {i}: an adapter is a name or a slot number, got {a!r}")
        return torch.tensor(out, dtype=torch.long)

    def forward(self, *inputs, adapters, **kwargs):
        """Run the base model on the batch with each row's adapter; outputs come back in the rows' order.

        ``inputs`` (and keyword inputs) are what the base model takes, ``input_ids, lengths`` for the course's
        classifiers; ``adapters`` has one entry per row. The rows are sorted by adapter on the way in (a
        stable sort: rows of one adapter keep their order), so every tensor input whose first dimension is
        the batch is reordered with them, and the output (a tensor, batch first) is put back in order.
        """
        if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].dim() == 0:
            raise TypeError("the first input must be a batch-first tensor (e.g. input_ids of shape (batch, seq))")
        n = inputs[0].shape[0]
        if n == 0:
            raise ValueError(f"the batch is empty (input of shape {tuple(inputs[0].shape)}): a mixed batch needs at "
                             "least one row, each with its adapter")
        slots = self.slots(adapters, n)
        order = None
        if bool((slots[1:] < slots[:-1]).any()):  # not grouped yet: sort the batch by adapter
            slots, order = torch.sort(slots, stable=True)

            def sort(t):
                return t.index_select(0, order.to(t.device)) if torch.is_tensor(t) and t.dim() and len(t) == n else t
            inputs, kwargs = tuple(sort(t) for t in inputs), {k: sort(v) for k, v in kwargs.items()}
        counts = torch.bincount(slots, minlength=len(self.names)).tolist()
        groups, start = [], 0
        for slot, count in enumerate(counts):
            if count:
                groups.append((slot, start, start + count))
                start += count
        self._route.batch, self._route.groups = n, groups
        try:
            out = self.base(*inputs, **kwargs)
        finally:
            self._route.batch = self._route.groups = None
        if order is None:
            return out
        if not torch.is_tensor(out) or out.dim() == 0 or len(out) != n:
            raise TypeError(f"the base model returned {type(out).__name__}; a mixed batch can put back in order "
                            "only a batch-first tensor. Send rows already grouped by adapter (sorted by slot), "
                            "which needs no reordering.")
        return torch.empty_like(out).index_copy_(0, order.to(out.device), out)

    def adapter_bytes(self) -> dict[str, int]:
        """Bytes each adapter adds to the shared base: its ``A`` and ``B`` in every layer it wraps, and its own
        copies of extra modules (the head)."""
        out = {n: [] for n in self.names[1:]}
        for m in self.modules():
            own = m.loras if isinstance(m, MultiLoRALinear) else m.copies if isinstance(m, PerRowModule) else {}
            for slot, sub in own.items():
                out[self.names[int(slot)]].extend([*sub.parameters(), *sub.buffers()])
        return {n: tensor_bytes(ts) for n, ts in out.items()}

    def base_bytes(self) -> int:
        """Bytes of the shared base (its frozen weights and its own head): what every adapter reuses."""
        adapter_ids = set()
        for m in self.modules():
            own = m.loras if isinstance(m, MultiLoRALinear) else m.copies if isinstance(m, PerRowModule) else {}
            adapter_ids |= {id(t) for sub in own.values() for t in [*sub.parameters(), *sub.buffers()]}
        return tensor_bytes(t for t in [*self.parameters(), *self.buffers()] if id(t) not in adapter_ids)

    def extra_repr(self) -> str:
        return f"slots={dict(enumerate(self.names))}"


def tensor_bytes(tensors) -> int:
    """Bytes held by these tensors, a storage shared by several (tied weights) counted once. Deterministic:
    counted from the tensors themselves, not from an allocator."""
    seen, total = set(), 0
    for t in tensors:
        if t.device.type == "meta":
            total += t.numel() * t.element_size()
            continue
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def serving_memory(mixed: MixedAdapterModel):
    """Weights in memory to serve the first N adapters, N = 1 ... all: one shared base plus N adapters, against
    N merged copies of the model (a merged copy holds a whole model: the same shapes as the base, head
    included). A DataFrame with columns ``N``, ``one base + N adapters`` and ``N merged copies``, in bytes."""
    import pandas as pd

    base, per_adapter = mixed.base_bytes(), list(mixed.adapter_bytes().values())
    rows, acc = [], 0
    for n, b in enumerate(per_adapter, start=1):
        acc += b
        rows.append({"N": n, "one base + N adapters": base + acc, "N merged copies": n * base})
    return pd.DataFrame(rows)
