"""Training and evaluation of a sequence classifier (GPT-2 or any model called as ``model(input_ids, lengths)``).

One loop serves every method (LoRA, full, last block): what is trained is decided by
``requires_grad`` before the call, and the optimizer only ever sees trainable parameters -
that is where LoRA's memory saving in optimizer state comes from.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..utils import env
from ..utils.machine import peak_memory_bytes, reset_peak_memory
from ..utils.precision import autocast, make_grad_scaler, precision_for, precision_name

__all__ = ["train_classifier", "evaluate", "predict", "train_step", "make_optimizer", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite. Raised *before* the backward pass and the optimizer step,
    so the parameters are still those of the last good step; the message names the broken parameters or
    the first layer whose output is not finite."""


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: unfreeze something (e.g. "
                         "mark_only_lora_trainable(model)) before training")
    kw = {"fused": True} if params[0].is_cuda else {}
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kw)


def _finite_on_every_rank(loss: torch.Tensor) -> bool:
    """Is the loss finite here and (under torch.distributed) on every other process too? All processes
    must agree, or one would stop while the others wait forever for its gradients."""
    bad = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1)
    return _all_reduce(bad).item() == 0


def _check_gradients(model, optimizer) -> None:
    """Raise :class:`NonFiniteLossError` naming the parameters whose gradient is NaN or inf (one fused norm
    over all gradients decides; the names are looked up only when it is not finite)."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    total = torch.stack(torch._foreach_norm([g.detach().float() for g in grads])).sum().reshape(1)
    if _all_reduce((~torch.isfinite(total)).to(torch.float32)).item() == 0:
        return
    net = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    bad_grads = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    broken = [n for n, p in net.named_parameters() if not torch.isfinite(p.detach()).all()]
    optimizer.zero_grad(set_to_none=True)  # nothing of this step reaches the weights
    msg = (f"the loss is finite but the gradients of {len(bad_grads)} parameter tensor(s) are NaN or inf: "
           f"{bad_grads[:6]}; the step was not taken, so no parameter has changed.")
    if broken:
        msg += (f" {len(broken)} parameter tensor(s) already hold NaN or inf ({broken[:3]}): a NaN that the forward "
                "pass masks (e.g. at padded positions) still reaches the gradients. Reload the model.")
    else:
        msg += " Lower the learning rate, or look for an operation with an undefined derivative (sqrt of 0, log of 0)."
    raise NonFiniteLossError(msg)


def _first_nonfinite_output(net: nn.Module, batch, device, amp_dtype) -> str | None:
    """Run the batch again with a hook on every module; return the first module whose output is not finite."""
    names = {m: n for n, m in net.named_modules()}
    found = []

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) and output else output
        if not found and torch.is_tensor(out) and out.is_floating_point() and not torch.isfinite(out).all():
            found.append(f"{names[module] or 'the model'} ({type(module).__name__})")

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad(), autocast(device, amp_dtype):
            net(batch.input_ids, batch.lengths)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def _explain_nonfinite(model, batch, loss, optimizer, device, amp_dtype) -> str:
    """Why is the loss NaN/inf? Broken weights (named, frozen or trained) or an overflowing activation."""
    net = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    lr = optimizer.param_groups[0]["lr"]
    bad = [(n, p.requires_grad) for n, p in net.named_parameters() if not torch.isfinite(p.detach()).all()]
    msg = f"the loss is {loss.item()}"
    if bad:
        frozen = [n for n, trainable in bad if not trainable]
        msg += f"; {len(bad)} parameter tensor(s) hold NaN or inf: {[n for n, _ in bad][:6]}"
        if frozen:
            msg += (f". {len(frozen)} of them are frozen ({frozen[:3]}), and training never changes frozen "
                    "weights: the model was broken before training (a corrupt checkpoint, or a weight edited by "
                    "hand). Reload the model; the learning rate is not the cause.")
        else:
            msg += (f". Only trained parameters are affected: the updates blew up. Lower the learning rate "
                    f"(now {lr:g}) or alpha, or set max_grad_norm=1.0; with fp16 mixed precision try bf16 or fp32.")
    else:
        where = _first_nonfinite_output(net, batch, device, amp_dtype)
        msg += (f" although every parameter is finite; the first non-finite activation is the output of {where}. "
                if where else " although every parameter is finite. ")
        msg += ("An activation overflowed: with fp16 mixed precision try bf16 or fp32; otherwise lower the learning "
                f"rate (now {lr:g}) or alpha, or set max_grad_norm=1.0, and check the inputs.")
    return msg + " Nothing was updated by this step."


def train_step(model, batch, optimizer, device, amp_dtype=None, scaler=None, max_grad_norm=None, *,
               check_finite: bool = True):
    """One forward + backward + optimizer step. Returns (loss tensor, number correct tensor).

    With ``check_finite`` (the default) a NaN or infinite loss raises :class:`NonFiniteLossError` *before*
    the backward pass, and so does a NaN or infinite gradient behind a finite loss *before* the optimizer step
    (a NaN in a frozen weight can reach the gradients only, through padded positions): one NaN gradient, once
    stepped, would turn every trained parameter into NaN and hide where the problem started. The checks read two
    numbers from the device each step (a sync on GPUs).
    ``scaler``: from :func:`make_grad_scaler` (made here when not given; pass one to keep its state across
    steps, as fp16 loss scaling needs).
    """
    with autocast(device, amp_dtype):
        logits = model(batch.input_ids, batch.lengths)
        loss = F.cross_entropy(logits.float(), batch.labels)
    if check_finite and not _finite_on_every_rank(loss):
        raise NonFiniteLossError(_explain_nonfinite(model, batch, loss, optimizer, device, amp_dtype))
    scaler = scaler or make_grad_scaler(device, amp_dtype)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # a disabled scaler (all but fp16) passes everything through
    if check_finite and not scaler.is_enabled():  # (fp16's scaler itself skips a step with inf/NaN gradients)
        _check_gradients(model, optimizer)
    if max_grad_norm:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), (logits.detach().argmax(-1) == batch.labels).sum()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


@torch.no_grad()
def evaluate(model, loader, device=None, max_batches: int | None = None, amp_dtype=None) -> dict:
    """Mean cross-entropy and accuracy over a loader (summed over ranks when distributed)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = batch.to(device)
        with autocast(device, amp_dtype):
            logits = model(batch.input_ids, batch.lengths).float()
        sums[0] += F.cross_entropy(logits, batch.labels, reduction="sum")
        sums[1] += (logits.argmax(-1) == batch.labels).sum()
        sums[2] += len(batch.labels)
    model.train(was_training)
    loss_sum, correct, n = _all_reduce(sums).tolist()
    return {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1), "n": int(n)}


@torch.no_grad()
def predict(model, loader, device=None) -> pd.DataFrame:
    """Per-example predictions in loader order: ``label``, ``pred``, ``p_spam`` (probability of class 1)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for batch in loader:
        batch = batch.to(device)
        probs = F.softmax(model(batch.input_ids, batch.lengths).float(), -1)
        rows.append(pd.DataFrame({"label": batch.labels.cpu().numpy(), "pred": probs.argmax(-1).cpu().numpy(),
                                  "p_spam": probs[:, 1].cpu().numpy()}))
    model.train(was_training)
    return pd.concat(rows, ignore_index=True)


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def default_progress() -> bool:
    """Progress bars on, except under CI or when LORA_LAB_PROGRESS=0 (they write to stderr)."""
    return env.progress()


def train_classifier(model, train_loader, val_loader=None, *, epochs: int = 5, lr: float = 5e-5,
                     weight_decay: float = 0.1, device=None, precision: str = "auto",
                     max_grad_norm: float | None = None, eval_max_batches: int | None = None,
                     progress: bool | None = None, log=print, optimizer=None, callback=None) -> pd.DataFrame:
    """Train for ``epochs`` epochs with AdamW over the trainable parameters; evaluate after each.

    Returns a DataFrame, one row per epoch: ``train_loss``, ``train_acc`` (running, over the epoch's
    batches), ``val_loss``, ``val_acc``, ``epoch_s`` (training time), ``eval_s``, ``elapsed_s`` (wall time
    so far, evaluation included), ``tokens_per_s`` (real, non-padding training tokens per second) and
    ``peak_mem_mb``; with fp16 (its loss scaler on) also ``skipped_steps`` (steps whose gradients overflowed in
    fp16: the scaler skipped them, nothing was updated, and it halved its scale) and ``loss_scale`` (the scale at
    the epoch's end). ``df.attrs`` holds the device and precision. Raises
    :class:`NonFiniteLossError` when the loss becomes NaN or infinite, before that step changes anything,
    naming the parameters or the layer at fault.

    ``callback(info)``, if given, is called after every optimizer step with a :class:`types.SimpleNamespace`:
    ``epoch``, ``epochs``, ``step``, ``steps`` (batches per epoch, or None), ``loss`` and ``acc`` (this
    batch), ``seen`` (examples so far this epoch) and ``history`` (the rows of the finished epochs). If it
    returns True, training stops cleanly after that batch: the epoch so far is evaluated and kept as the last
    row (``df.attrs["stopped_early"]`` is True), so nothing trained is lost (``lora_lab.course.widgets`` uses this
    for its Stop button). Under torch.distributed every process must return the same answer.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp_dtype = precision_for(device, precision)
    scaler = make_grad_scaler(device, amp_dtype)
    optimizer = optimizer or make_optimizer(model, lr, weight_decay)
    progress = default_progress() if progress is None else progress
    show = progress and _is_main_process()
    from tqdm.auto import tqdm

    try:
        n_batches = len(train_loader)
    except TypeError:  # an iterable without a length
        n_batches = None
    if n_batches == 0:
        raise ValueError(f"the training loader has no batches: batch_size={train_loader.batch_size} is larger than "
                         f"its {len(train_loader.sampler)} examples (the last, partial batch is dropped). Use a "
                         "smaller batch size or more data.")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    rows, t_start, stopped = [], time.perf_counter(), False
    reset_peak_memory(device)
    model.train()
    if log and _is_main_process():
        log(f"training on {device.type} in {'fp32' if amp_dtype is None else str(amp_dtype)[6:] + ' autocast'} "
            f"(precision={precision!r})")
    for epoch in range(1, epochs + 1):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, correct, n, tokens
        skipped = 0  # fp16 steps the scaler skipped (overflowed gradients)
        t0 = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", disable=not show, leave=False)
        for step, batch in enumerate(bar, 1):
            batch = batch.to(device)
            scale = scaler.get_scale() if scaler.is_enabled() else None  # (a sync per step, fp16 only)
            try:
                loss, correct = train_step(model, batch, optimizer, device, amp_dtype, scaler, max_grad_norm)
            except NonFiniteLossError as e:
                raise NonFiniteLossError(f"training stopped at epoch {epoch}, step {step}: {e}") from None
            if scale is not None and scaler.get_scale() < scale:  # the scaler backs off only when it skipped
                skipped += 1
            n = len(batch.labels)
            sums[0] += loss * n
            sums[1] += correct
            sums[2] += n
            sums[3] += batch.lengths.sum()
            if callback is not None and callback(SimpleNamespace(
                    epoch=epoch, epochs=epochs, step=step, steps=n_batches, loss=loss.item(), acc=correct.item() / n,
                    seen=int(sums[2].item()), history=list(rows))):
                stopped = True
                bar.close()
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t0
        loss_sum, correct, n, tokens = _all_reduce(sums).tolist()  # every loss was checked finite by train_step
        t1 = time.perf_counter()
        val = evaluate(model, val_loader, device, eval_max_batches, amp_dtype) if val_loader is not None else \
            {"loss": float("nan"), "accuracy": float("nan")}
        row = {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n, "val_loss": val["loss"],
               "val_acc": val["accuracy"], "epoch_s": train_s, "eval_s": time.perf_counter() - t1,
               "elapsed_s": time.perf_counter() - t_start, "tokens_per_s": tokens / train_s,
               "peak_mem_mb": peak_memory_bytes(device) / 2**20}
        if scaler.is_enabled():
            row.update(skipped_steps=skipped, loss_scale=scaler.get_scale())
        rows.append(row)
        if log and _is_main_process():
            log(f"epoch {epoch}/{epochs}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.1%} | "
                f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.1%} | {train_s:.1f}s, "
                f"{row['tokens_per_s']:,.0f} tok/s"
                + (f" | fp16: {skipped} step(s) skipped (overflow), loss scale {row['loss_scale']:g}"
                   if scaler.is_enabled() else ""))
        if stopped:
            break
    df = pd.DataFrame(rows)
    df.attrs.update(device=str(device), precision=precision_name(amp_dtype), stopped_early=stopped)
    return df
