"""The T4 path (issue 25 §3): fp16 autocast with the loss scaler, run on a CPU.

The free Colab GPU is a T4, which has no bf16: every free-tier learner trains in fp16 autocast with a GradScaler.
CPU autocast supports fp16 and torch has a CPU GradScaler, so ``precision="fp16"`` on a CPU takes the same branch
(:func:`lora_lab.utils.precision.make_grad_scaler` enables the scaler for fp16 on CPU as on CUDA): these tests run it
for
LoRA and full fine-tuning on the tiny GPT-2 and synthetic token ids (no data files, a few seconds).
"""
import pytest
import torch

from lora_lab.data import make_loader
from lora_lab.models.gpt2 import GPT, PRESETS
from lora_lab.train import apply_method, make_optimizer, train_classifier, train_step
from lora_lab.utils.machine import set_seed
from lora_lab.utils.precision import make_grad_scaler, precision_for

CPU = torch.device("cpu")


def _loaders(n=48, seed=0):
    """Token-id messages whose label is whether they start with token 7: learnable, and no tokenizer needed."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        ids = torch.randint(100, 5000, (int(torch.randint(4, 20, (1,), generator=g)),), generator=g)
        label = i % 2
        if label:
            ids[0] = 7
        items.append((ids.tolist(), label))
    return (make_loader(items[: n - 16], 8, shuffle=True, drop_last=True), make_loader(items[n - 16:], 8))


def _model(method):
    set_seed(3)
    return apply_method(GPT(PRESETS["tiny"]).to_classifier(2), method, 4, 4)


def test_fp16_on_a_cpu_takes_the_t4_branch():
    assert precision_for(CPU, "fp16") == torch.float16
    assert make_grad_scaler(CPU, torch.float16).is_enabled()
    assert not make_grad_scaler(CPU, torch.bfloat16).is_enabled() and not make_grad_scaler(CPU, None).is_enabled()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fine_tuning_in_fp16_with_the_loss_scaler(method, monkeypatch):
    """A few epochs through the scaler-enabled branch: fp16 matmuls, the scaler's step, skipped steps counted and
    the scale recorded in the history, trained weights changed and finite, frozen ones untouched."""
    model = _model(method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dtypes, steps = set(), []
    model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    real_step = torch.amp.GradScaler.step

    def step(self, optimizer, *a, **kw):
        steps.append(self.is_enabled())
        return real_step(self, optimizer, *a, **kw)

    monkeypatch.setattr(torch.amp.GradScaler, "step", step)
    hist = train_classifier(model, *_loaders(), epochs=3, lr=2e-3, precision="fp16", log=None)
    assert hist.attrs["precision"] == "fp16" and torch.float16 in dtypes
    assert steps == [True] * (3 * 4)  # every step went through an enabled scaler
    assert list(hist.columns[-2:]) == ["skipped_steps", "loss_scale"]
    # the scaler halves its scale once per skipped step (it would grow only after 2000 good ones)
    for skipped, scale in zip(hist["skipped_steps"].cumsum(), hist["loss_scale"]):
        assert scale == 2.0**16 * 0.5**skipped
    assert hist["skipped_steps"].sum() < 12 and hist["train_loss"].notna().all()
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), n
        assert (not torch.equal(p, before[n])) == p.requires_grad, n


def test_an_fp16_overflow_is_skipped_not_turned_into_nan_weights():
    """Gradients that overflow fp16 (a loss scale far too large) make the scaler skip the step: the weights stay
    exactly as they were, finite, and the scale is halved; training then goes on from there."""
    model = _model("lora")
    batch = next(iter(_loaders()[0]))
    opt = make_optimizer(model, 1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, _ = train_step(model, batch, opt, CPU, torch.float16, scaler)
    assert torch.isfinite(loss)
    assert not all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)  # it overflowed
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # ... and nothing was stepped
    assert scaler.get_scale() == 2.0**23


def test_train_classifier_counts_the_overflowed_steps(monkeypatch):
    """The same through the training loop: the overflowed steps are counted in the history, the scale comes down
    to where fp16 holds the gradients, the weights stay finite and the model still learns."""
    monkeypatch.setattr("lora_lab.train.loop.make_grad_scaler",
                        lambda device, amp_dtype: torch.amp.GradScaler("cpu", init_scale=2.0**24))
    model = _model("lora")
    hist = train_classifier(model, *_loaders(), epochs=3, lr=2e-3, precision="fp16", log=None)
    skipped = int(hist["skipped_steps"].sum())
    assert 8 <= skipped < 12  # 2**24 down to 2**16 or lower, where fp16 holds these gradients, takes 8+ halvings
    assert hist["loss_scale"].iloc[-1] == 2.0**24 * 0.5**skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), _model("lora").parameters()))
