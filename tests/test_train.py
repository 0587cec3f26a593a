"""Training loop, reproducibility, NaN handling, and the finetune command."""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from lora_lab.data import SpamDataset, balanced_split, load_sms_spam, make_loader
from lora_lab.lora import count_parameters
from lora_lab.models.gpt2 import GPT, PRESETS
from lora_lab.train import NonFiniteLossError, apply_method, make_optimizer, train_classifier
from lora_lab.utils.machine import peak_memory_bytes, set_seed

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def loaders():
    df = load_sms_spam()
    df = df.groupby("label", group_keys=False).sample(40, random_state=0)
    train, val, _ = balanced_split(df)
    return (make_loader(SpamDataset(train, max_length=32), 8, shuffle=True, drop_last=True),
            make_loader(SpamDataset(val, max_length=32), 8))


def _run(method, loaders, seed=5, **kw):
    set_seed(seed)
    model = apply_method(GPT(PRESETS["tiny"]).to_classifier(2), method, 4, 4)
    hist = train_classifier(model, *loaders, epochs=2, lr=1e-3, log=None, **kw)
    return model, hist


def test_history_columns_and_learning(loaders):
    _, hist = _run("lora", loaders)
    assert list(hist.columns) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "eval_s",
                                  "elapsed_s", "tokens_per_s", "peak_mem_mb"]
    assert len(hist) == 2 and (hist["tokens_per_s"] > 0).all() and (hist["peak_mem_mb"] > 0).all()
    # precision "auto" on a CPU: bf16 only where this CPU has native bf16 and the probe measured it faster
    from lora_lab.utils.precision import cpu_autocast_dtype, precision_name

    assert hist.attrs["device"] == "cpu" and hist.attrs["precision"] == precision_name(cpu_autocast_dtype())


def test_same_seed_same_numbers(loaders):
    _, a = _run("lora", loaders, seed=11)
    _, b = _run("lora", loaders, seed=11)
    assert a[["train_loss", "val_loss", "val_acc"]].equals(b[["train_loss", "val_loss", "val_acc"]])


@pytest.mark.parametrize("method", ["lora", "full", "last-block"])
def test_only_trainable_parameters_change_and_reach_the_optimizer(method, loaders):
    set_seed(0)
    model = apply_method(GPT(PRESETS["tiny"]).to_classifier(2), method, 4, 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, 1e-3)
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == count_parameters(model).trainable
    train_classifier(model, *loaders, epochs=1, optimizer=opt, log=None)
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == p.requires_grad, n
    if method == "last-block":
        assert model.transformer.h[-1].mlp.c_fc.weight.requires_grad
        assert not model.transformer.h[0].ln_1.weight.requires_grad


def test_nan_loss_stops_with_a_clear_error(loaders):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, idx, lengths):
            return torch.full((idx.shape[0], 2), float("nan")) * self.w

    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        train_classifier(Broken(), *loaders, epochs=1, log=None)


def test_no_trainable_parameters_is_a_clear_error(loaders):
    model = GPT(PRESETS["tiny"]).to_classifier(2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_classifier(model, *loaders, epochs=1, log=None)


@pytest.mark.slow
def test_finetune_cli_tiny_random(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "lora_lab.finetune", "--model", "tiny", "--weights", "random",
                        "--epochs", "1", "--subset", "40", "--max-length", "32", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "1"})
    assert r.returncode == 0, r.stderr
    assert "SMOKE RUN" in r.stdout and "MEAN NOTHING" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke_numbers_mean_nothing"] is True and metrics["method"] == "lora"
    assert 0 <= metrics["test_acc"] <= 1 and metrics["params_trainable"] < metrics["params_total"]
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "adapter" / "adapter.safetensors").exists()


def test_finetune_cli_bad_rank_is_rejected(tmp_path, capsys):
    from lora_lab.experiments.finetune_job import main
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", "--weights", "random", "--rank", "0", "--subset", "20", "--out", str(tmp_path)])
    assert e.value.code == 2 and "argument --rank: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_peak_memory_without_the_resource_module(monkeypatch):
    """Windows has no ``resource``: psutil's peak working set answers, and without psutil it is NaN, said
    aloud, never a made-up number."""
    cpu = torch.device("cpu")
    linux = peak_memory_bytes(cpu)
    pytest.importorskip("psutil")  # (imported first: on Linux psutil itself uses resource)
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource -> ImportError, as on Windows
    assert 0 < peak_memory_bytes(cpu) <= 2 * linux  # psutil's answer (its current RSS here, on Linux)
    monkeypatch.setitem(sys.modules, "psutil", None)
    with pytest.warns(RuntimeWarning, match="pip install psutil"):
        assert math.isnan(peak_memory_bytes(cpu))


def test_finetune_config_is_what_the_cli_builds_and_runs_from_python(tmp_path, capsys):
    """Python code (the benchmark, a notebook) runs the command's code with a FinetuneConfig, no argv strings;
    a config that cannot work is a UsageError naming the flag, not a SystemExit."""
    from lora_lab.experiments.finetune_job import FinetuneConfig, UsageError, build_parser, run
    argv = ["--model", "tiny", "--weights", "random", "--epochs", "1", "--subset", "10", "--max-length", "32",
            "--device", "cpu", "--no-plot", "--out", str(tmp_path / "run")]
    config = FinetuneConfig(model="tiny", weights="random", epochs=1, subset=10, max_length=32, device="cpu",
                            plot=False, out=str(tmp_path / "run"))
    assert FinetuneConfig.from_args(build_parser().parse_args(argv)) == config
    assert FinetuneConfig.from_args(build_parser().parse_args([])) == FinetuneConfig()  # one set of defaults
    result = run(config)
    assert result["metrics"]["max_length"] == 32 and result["metrics"]["world_size"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_acc"] == result["metrics"]["test_acc"]
    assert not (tmp_path / "run" / "curves.png").exists()
    for bad, message in ((dict(epochs=0), "--epochs: must be at least 1, got 0"),
                         (dict(lr=float("nan")), "--lr: must be a finite number > 0, got nan"),
                         (dict(method="lora-16"), "--method must be one of ('lora', 'full', 'last-block')"),
                         (dict(rank=0), "--rank: must be at least 1, got 0"),
                         (dict(alpha=float("inf")), "--alpha: must be a finite number > 0, got inf")):
        with pytest.raises(UsageError, match=re.escape(message)):
            run(dataclasses.replace(config, **bad))


def test_a_nan_gradient_behind_a_finite_loss_is_not_stepped():
    """The loss is finite, the gradient is NaN (a masked branch with an undefined derivative, as a NaN frozen
    weight at padded positions gives): train_step stops before the optimizer step, naming the parameter."""
    from lora_lab.data import Batch
    from lora_lab.train import NonFiniteLossError, make_optimizer, train_step

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))
            self.classifier = torch.nn.Linear(2, 2)

        def forward(self, ids, lengths):
            x = self.w.expand(ids.shape[0], 2)
            keep = torch.ones_like(x, dtype=torch.bool)
            return self.classifier(torch.where(keep, x, torch.sqrt(-x)))  # forward finite; d/dw: 0 * NaN

    model = Masked()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = Batch(torch.zeros(4, 3, dtype=torch.long), torch.full((4,), 3), torch.tensor([0, 1, 0, 1]))
    opt = make_optimizer(model, 1e-2)
    with pytest.raises(NonFiniteLossError, match=r"gradients of 1 parameter tensor\(s\) are NaN or inf: \['w'\]"):
        train_step(model, batch, opt, torch.device("cpu"))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing was stepped
