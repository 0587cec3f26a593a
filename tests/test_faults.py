"""Hostile inputs and faults (issue 10): nothing lost, nothing half-done, every error clear.

One section per fault; docs/faults.md is the table of what happens now.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lora_lab.data import SMS_SHA256, SpamDataset, collate, default_data_dir, make_loader
from lora_lab.lora import (
    AdapterMismatchError,
    LinearWithLoRA,
    LoRALayer,
    load_adapter,
    lora_layers,
    mark_only_lora_trainable,
    merge_lora,
    replace_linear_with_lora,
    save_adapter,
    unmerge_lora,
)
from lora_lab.models.gpt2 import GPT, PRESETS, GPTConfig, WeightsIntegrityError, load_pretrained
from lora_lab.train import NonFiniteLossError, train_classifier
from lora_lab.utils.files import DataIntegrityError

ENV = {**os.environ, "CI": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
TINY = PRESETS["tiny"]


def lora_tiny(seed=0, rank=4, alpha=8, trained=True):
    """A tiny GPT-2 classifier with LoRA, its LoRA weights and head set to seeded "trained" values."""
    torch.manual_seed(0)
    model = GPT(TINY).to_classifier(2)
    replace_linear_with_lora(model, rank, alpha)
    mark_only_lora_trainable(model)
    if trained:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def fresh_base():
    torch.manual_seed(0)
    return GPT(TINY).to_classifier(2)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: type(m).__name__ for n, m in model.named_modules()})


def assert_unchanged(model, snap):
    sd, types = snap
    assert {n: type(m).__name__ for n, m in model.named_modules()} == types
    now = model.state_dict()
    assert now.keys() == sd.keys() and all(torch.equal(now[k], v) for k, v in sd.items())


def adapter_sha(folder):
    return json.loads((Path(folder) / "adapter_config.json").read_text())["sha256"]


# --- 1. save_adapter updates the folder as one step ----------------------------------------------
KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
import lora_lab.utils.files, lora_lab.lora.adapter_file as L
from lora_lab.models.gpt2 import GPT, PRESETS

point, new, target = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
model = GPT(PRESETS["tiny"]).to_classifier(2)
L.load_adapter(model, new)
real_write, real_replace = L.atomic_write, os.replace

def write(path, fn):  # die like kill -9 just before the config is written
    if point == "config" and Path(path).name == "adapter_config.json":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, fn)

def replace(src, dst):  # die just before the weights are moved to adapter.safetensors (after the config)
    if point == "rename" and Path(dst).name == "adapter.safetensors":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

L.atomic_write, os.replace = write, replace
L.save_adapter(model, target)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.parametrize("point, expect", [("config", "old"), ("rename", "new")])
def test_kill_9_during_save_leaves_old_or_new_adapter_never_a_mix(tmp_path, point, expect):
    old, new, target = tmp_path / "old", tmp_path / "new", tmp_path / "target"
    save_adapter(lora_tiny(seed=1), old)
    save_adapter(lora_tiny(seed=2), new)
    shutil.copytree(old, target)
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, point, str(new), str(target)], capture_output=True,
                       text=True, timeout=300, env=ENV)
    assert r.returncode == -9, r.stderr[-2000:]  # really killed mid-save
    cfg = load_adapter(fresh_base(), target)  # still a loadable adapter ...
    assert cfg["sha256"] == adapter_sha(old if expect == "old" else new)  # ... the whole old one or the whole new one
    save_adapter(lora_tiny(seed=3), target)  # what the kill left behind does not get in the way
    assert sorted(p.name for p in target.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert load_adapter(fresh_base(), target)["sha256"] == adapter_sha(target)


def test_full_disk_while_writing_the_config_keeps_the_old_adapter(tmp_path, monkeypatch):
    save_adapter(lora_tiny(seed=1), tmp_path / "a")
    old_sha = adapter_sha(tmp_path / "a")
    real = Path.write_text

    def full_disk(self, *a, **k):
        if self.name.startswith(".adapter_config.json"):
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full_disk)
    # the bytes are hashed in memory: the weights file just written is never read back
    read_bytes = Path.read_bytes

    def no_weights_reread(self):
        if self.name.endswith(".safetensors"):
            pytest.fail(f"save_adapter re-read {self.name}")
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", no_weights_reread)
    with pytest.raises(OSError, match="No space left"):
        save_adapter(lora_tiny(seed=2), tmp_path / "a")
    monkeypatch.undo()
    assert load_adapter(fresh_base(), tmp_path / "a")["sha256"] == old_sha
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter.safetensors", "adapter_config.json"]


def test_stray_temporary_files_do_not_break_later_saves(tmp_path):
    folder = tmp_path / "a"
    save_adapter(lora_tiny(seed=1), folder)
    for name in (".adapter.safetensors.x1.tmp", ".adapter_config.json.x2.tmp", f".adapter.{'0' * 64}.safetensors"):
        (folder / name).write_bytes(b"left by a killed process")
    save_adapter(lora_tiny(seed=2), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert load_adapter(fresh_base(), folder)["sha256"] == hashlib.sha256(
        (folder / "adapter.safetensors").read_bytes()).hexdigest()


# --- 2. load_adapter validates everything first and changes nothing on failure --------------------
def _edit_config(folder, edit):
    p = Path(folder) / "adapter_config.json"
    cfg = json.loads(p.read_text())
    edit(cfg)
    p.write_text(json.dumps(cfg))


BAD_CONFIGS = {
    "missing key": (lambda c: c.pop("rank"), r"lacks \['rank'\]"),
    "rank as a string": (lambda c: c.update(rank="8"), "rank must be a positive int"),
    "negative alpha": (lambda c: c.update(alpha=-16), "alpha must be a positive number"),
    "zero alpha": (lambda c: c.update(alpha=0), "alpha must be a positive number"),
    "NaN alpha": (lambda c: c.update(alpha=float("nan")), "alpha must be a positive number"),
    "unknown scaling rule": (lambda c: c.update(scaling_rule="alpha"), "scaling_rule must be one of"),
    "glob as a layer name": (lambda c: c.update(layers=["*"]), "exact module names"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("onto", ["base", "wrapped"])
def test_bad_adapter_config_is_a_clear_error_and_changes_nothing(tmp_path, case, onto):
    edit, message = BAD_CONFIGS[case]
    save_adapter(lora_tiny(seed=1), tmp_path / "a")
    _edit_config(tmp_path / "a", edit)
    model = fresh_base() if onto == "base" else lora_tiny(seed=5)
    snap = snapshot(model)
    scalings = [m.lora.scaling for m in lora_layers(model).values()]
    with pytest.raises(ValueError, match=message) as e:
        load_adapter(model, tmp_path / "a")
    assert "adapter_config.json" in str(e.value)  # names the file
    assert_unchanged(model, snap)
    assert [m.lora.scaling for m in lora_layers(model).values()] == scalings


def test_invalid_json_names_the_file(tmp_path):
    save_adapter(lora_tiny(seed=1), tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").write_text('{"rank": 4,')
    model = fresh_base()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"adapter_config.json is not valid JSON"):
        load_adapter(model, tmp_path / "a")
    assert_unchanged(model, snap)


def test_adapter_for_other_shapes_leaves_the_base_unwrapped(tmp_path):
    from dataclasses import replace
    save_adapter(lora_tiny(seed=1), tmp_path / "a")
    torch.manual_seed(0)
    wider = GPT(replace(TINY, n_embd=128)).to_classifier(2)
    snap = snapshot(wider)
    with pytest.raises(AdapterMismatchError, match="does not fit this model"):
        load_adapter(wider, tmp_path / "a")
    assert_unchanged(wider, snap)
    assert not lora_layers(wider)


# --- 3. training through merged layers is an error -------------------------------------------------
def test_training_a_merged_model_is_an_error_but_merged_inference_works():
    model = lora_tiny(seed=1)
    x, lengths = torch.randint(0, 50257, (3, 12)), torch.tensor([12, 5, 9])
    model.eval()
    with torch.no_grad():
        y = model(x, lengths)
    merge_lora(model)
    with torch.no_grad():  # inference, as notebook 6 times it
        torch.testing.assert_close(model(x, lengths), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, lengths), y, atol=1e-5, rtol=1e-5)  # eval mode, grad enabled: fine too
    model.train()
    loss = model(x, lengths).sum()  # the forward pass runs ...
    with pytest.raises(RuntimeError, match=r"merged.*unmerge_lora\(model\) before training"):
        loss.backward()  # ... but gradients would never reach A and B
    unmerge_lora(model)
    model(x, lengths).sum().backward()
    assert all(m.lora.A.grad is not None for m in lora_layers(model).values())


# --- 4. a non-finite loss stops before the step, naming the culprit --------------------------------
@pytest.fixture(scope="module")
def small_loaders():
    from lora_lab.data import load_sms_spam
    df = load_sms_spam().groupby("label", group_keys=False).head(16).reset_index(drop=True)
    df["label_id"] = (df["label"] == "spam").astype(int)
    ds = SpamDataset(df, max_length=24)
    return make_loader(ds, 8, shuffle=True, drop_last=True), make_loader(ds, 8)


@pytest.mark.needs_data
def test_nan_in_a_frozen_weight_stops_before_any_parameter_changes(small_loaders):
    model = lora_tiny(seed=1)
    with torch.no_grad():
        model.transformer.h[0].ln_1.weight[3] = float("nan")
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with pytest.raises(NonFiniteLossError) as e:
        train_classifier(model, *small_loaders, epochs=1, lr=1e-3, log=None)
    msg = str(e.value)
    assert "epoch 1, step 1" in msg and "transformer.h.0.ln_1.weight" in msg
    assert "frozen" in msg and "learning rate is not the cause" in msg
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, trained[n]), n  # no step was taken: nothing trainable became NaN


@pytest.mark.needs_data
def test_nan_activation_names_the_first_layer_with_a_non_finite_output(small_loaders):
    model = lora_tiny(seed=1)
    model.transformer.h[1].mlp.c_fc.register_forward_hook(lambda m, i, o: o * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"first non-finite activation is the output of "
                                                 r"transformer\.h\.1\.mlp\.c_fc"):
        train_classifier(model, *small_loaders, epochs=1, lr=1e-3, log=None)


# --- 5. lengths and empty messages ------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [[0, 3], [-1, 3], [3, 6], [3, 1000]])
def test_lengths_outside_1_to_T_are_a_clear_error(tiny_model, lengths):
    tiny_model.to_classifier(2)
    x = torch.randint(0, 50256, (2, 5))
    with pytest.raises(ValueError, match="lengths must be between 1 and the sequence length 5"):
        tiny_model(x, torch.tensor(lengths))


def test_lengths_of_the_wrong_shape_are_a_clear_error(tiny_model):
    tiny_model.to_classifier(2)
    with pytest.raises(ValueError, match=r"one entry per row \(2,\)"):
        tiny_model(torch.randint(0, 50256, (2, 5)), torch.tensor([5, 5, 5]))


@pytest.mark.needs_data
def test_empty_messages_are_rejected_by_the_dataset():
    df = pd.DataFrame({"text": ["hello there", "", "win a prize"], "label_id": [0, 1, 1]})
    with pytest.raises(ValueError, match=r"1 message\(s\) are empty or blank.*index 1"):
        SpamDataset(df)
    with pytest.raises(ValueError, match="no tokens"):
        collate([([1, 2], 0), ([], 1)])
    with pytest.raises(ValueError, match="pad_to=1 is shorter"):
        collate([([1, 2], 0)], pad_to=1)


# --- 6 and 7. the finetune command: default max_length, degenerate arguments ---------------------------
def _finetune(tmp_path, *args):
    from lora_lab.experiments.finetune_job import main
    out = tmp_path / "run"
    main(["--epochs", "1", "--no-plot", "--device", "cpu", "--out", str(out), *args])
    return json.loads((out / "metrics.json").read_text()), out


@pytest.mark.needs_data
def test_tiny_command_truncates_to_the_context_by_default(tmp_path, capsys):
    """Seed 31 with 10 messages per class puts the collection's 257-token message into the test split: it
    used to crash tiny (block size 256) after training."""
    metrics, _ = _finetune(tmp_path, "--model", "tiny", "--weights", "random", "--subset", "10", "--seed", "31")
    assert metrics["max_length"] == 256
    from lora_lab.utils.precision import cpu_autocast_dtype

    expected = "bf16" if cpu_autocast_dtype() is not None else "fp32"  # auto on a CPU: native bf16 and measured faster
    assert metrics["precision"] == expected and metrics["precision_requested"] == "auto"  # item 11
    assert metrics["base_weights_sha256"] is None  # random weights: no base file to name


def _usage_error(tmp_path, capsys, *args):
    from lora_lab.experiments.finetune_job import main
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", "--weights", "random", "--no-plot", "--device", "cpu",
              "--out", str(tmp_path / "run"), *args])
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--subset", "0"], "argument --subset: must be at least 1, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--lr", "-1"], "argument --lr: must be a finite number > 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    (["--max-length", "300"], "--max-length 300 is longer than tiny's context of 256 tokens"),
    (["--rank", "0"], "argument --rank: must be at least 1, got 0"),
    (["--rank", "2.5"], "argument --rank: expected a whole number, got '2.5'"),
    (["--alpha", "-2"], "argument --alpha: must be a finite number > 0, got -2"),
    (["--rank", "100000000"], "--rank 100000000 is above tiny's width of 64"),
    (["--lora-dropout", "1.5"], "--lora-dropout: dropout must be in [0, 1)"),
    (["--target", "attn"], "argument --target: invalid choice"),
    (["--subset", "10000"], "--subset 10000: per_class must be a whole number from 1 to 747"),
    (["--subset", "4"], "--subset 4 leaves the validation split empty"),
    (["--subset", "5", "--batch-size", "64"], "--batch-size 64 is larger than the 7 training messages"),
])
@pytest.mark.needs_data
def test_degenerate_arguments_are_usage_errors_naming_the_argument(tmp_path, capsys, args, message):
    assert message in _usage_error(tmp_path, capsys, *args)


def test_unwritable_out_fails_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr("lora_lab.experiments.finetune_job.spam_splits", lambda *a, **k: pytest.fail("started working"))
    from lora_lab.experiments.finetune_job import main
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", "--weights", "random", "--out", str(tmp_path / "file" / "run")])
    assert e.value.code == 2
    assert f"--out {tmp_path / 'file' / 'run'}: cannot create this folder" in capsys.readouterr().err


@pytest.mark.parametrize("make, args, message", [
    (lambda out: (out / "adapter").write_text("x"), [], "adapter is a file where the run writes the folder"),
    (lambda out: (out / "metrics.json").mkdir(), [], "metrics.json is a folder where the run writes a file"),
    (lambda out: (out / "adapter_peft").write_text("x"), ["--export", "peft"], "adapter_peft is a file"),
    (lambda out: (out / "merged").mkdir() or (out / "merged" / "README.md").write_text("mine"),
     ["--export", "merged"], "holds other files (['README.md'])"),
])
def test_an_output_that_would_clash_after_training_fails_before_it(tmp_path, capsys, monkeypatch, make, args,
                                                                    message):
    """Each of these used to train fully and then crash, losing the model: they are usage errors up front."""
    out = tmp_path / "run"
    out.mkdir()
    make(out)
    monkeypatch.setattr("lora_lab.experiments.finetune_job.spam_splits", lambda *a, **k: pytest.fail("started working"))
    from lora_lab.experiments.finetune_job import main
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", "--weights", "random", "--out", str(out), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


# --- 8. cache seed verifies what is already there ---------------------------------------------------
@pytest.mark.needs_data
def test_cache_seed_replaces_a_corrupt_existing_file(tmp_path, monkeypatch, capsys):
    from lora_lab.cache import main
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    src = tmp_path / "src" / "sms_spam_collection" / "SMSSpamCollection"
    src.parent.mkdir(parents=True)
    shutil.copy(default_data_dir() / "SMSSpamCollection", src)
    data = tmp_path / "data"
    data.mkdir()
    (data / "SMSSpamCollection").write_text("ham\ttruncated download")
    main(["seed", str(tmp_path / "src"), "--data-dir", str(data)])
    assert hashlib.sha256((data / "SMSSpamCollection").read_bytes()).hexdigest() == SMS_SHA256
    assert "replaced" in capsys.readouterr().out
    main(["seed", str(tmp_path / "src"), "--data-dir", str(data)])  # a verified file is kept
    assert "already there" in capsys.readouterr().out
    # a corrupt source is refused and the verified file stays
    src.write_text("ham\tforged")
    with pytest.raises(SystemExit, match="expected " + SMS_SHA256):
        main(["seed", str(tmp_path / "src"), "--data-dir", str(data)])
    assert hashlib.sha256((data / "SMSSpamCollection").read_bytes()).hexdigest() == SMS_SHA256


def test_cache_seed_refuses_a_corrupt_source_without_touching_the_cache(tmp_path):
    from lora_lab.cache import seed
    src = tmp_path / "src" / "sms_spam_collection" / "SMSSpamCollection"
    src.parent.mkdir(parents=True)
    src.write_text("ham\tforged")
    with pytest.raises(DataIntegrityError, match="not copying it"):
        seed(tmp_path / "src", data_dir=tmp_path / "data")
    assert not (tmp_path / "data" / "SMSSpamCollection").exists()


# --- 9. a rank conflict is found before anything is wrapped -------------------------------------------
def test_rank_conflict_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = GPT(TINY).to_classifier(2)
    replace_linear_with_lora(model, 8, 8, target="mlp")
    before = sorted(lora_layers(model))
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"already wrapped with rank=8.*nothing was changed"):
        replace_linear_with_lora(model, 4, 4, target="all")
    assert sorted(lora_layers(model)) == before
    assert_unchanged(model, snap)


# --- 10. merge/unmerge is exact in fp16/bf16 ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_unmerge_restores_low_precision_weights_exactly(dtype):
    torch.manual_seed(0)
    layer = LinearWithLoRA(nn.Linear(64, 48), 8, 16).to(dtype).eval()
    w0 = layer.linear.weight.detach().clone()
    x = torch.randn(4, 64, dtype=dtype)
    for cycle in range(5):
        with torch.no_grad():
            layer.lora.B.normal_(std=0.3)  # B changes between cycles, as in training
            y = layer(x)
            layer.merge()
            torch.testing.assert_close(layer(x), y, atol=0.05, rtol=0.05)
            if cycle % 2:
                layer.lora.B.normal_(std=0.3)  # ... or even while merged
            layer.unmerge()
        assert torch.equal(layer.linear.weight, w0), cycle


def test_unmerge_in_fp32_subtracts_what_was_merged():
    torch.manual_seed(0)
    layer = LinearWithLoRA(nn.Linear(64, 48), 8, 16).eval()
    w0 = layer.linear.weight.detach().clone()
    with torch.no_grad():
        layer.lora.B.normal_(std=0.3)
        layer.merge()
        layer.lora.B.normal_(std=0.3)  # B changed while merged
        layer.unmerge()
    torch.testing.assert_close(layer.linear.weight, w0, atol=1e-6, rtol=0)
    assert "_weight_before_merge" not in layer.state_dict() and "_merged_A" not in layer.state_dict()


# --- 11. messages ----------------------------------------------------------------------------------
def test_heads_that_do_not_divide_the_width_are_a_clear_error():
    with pytest.raises(ValueError, match="n_embd=65 is not divisible by n_head=2"):
        GPT(GPTConfig("odd", n_layer=1, n_head=2, n_embd=65))


def _hf_copy(hf_tiny_dir, dst):
    shutil.copytree(hf_tiny_dir, dst)
    return dst


def test_bad_config_json_names_the_file(hf_tiny_dir, tmp_path):
    broken = _hf_copy(hf_tiny_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        load_pretrained(broken)
    partial = _hf_copy(hf_tiny_dir, tmp_path / "partial")
    cfg = json.loads((partial / "config.json").read_text())
    del cfg["n_head"]
    (partial / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json lacks \['n_head'\]"):
        load_pretrained(partial)


@pytest.mark.parametrize("bad_id", [50257, -1])
def test_token_ids_outside_the_vocabulary_are_a_clear_error(tiny_model, bad_id):
    with pytest.raises(ValueError, match=f"token id {bad_id} is outside the model's vocabulary"):
        tiny_model(torch.tensor([[1, 2, bad_id]]))


def test_numpy_numbers_are_accepted_as_rank_and_alpha(tmp_path):
    layer = LoRALayer(16, 16, np.int64(4), np.float32(8.0), dropout=np.float64(0.1))
    assert type(layer.rank) is int and type(layer.alpha) is float and layer.scaling == 2.0
    torch.manual_seed(0)
    model = replace_linear_with_lora(GPT(TINY).to_classifier(2), np.int64(4), np.int64(8))
    save_adapter(model, tmp_path / "a")  # the config is plain JSON
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["rank"] == 4


def test_rank_larger_than_the_layer_warns():
    with pytest.warns(UserWarning, match=r"rank=32 is larger than this layer's smaller side \(16 in, 64 out\)"):
        LoRALayer(16, 64, 32, 32)


@pytest.mark.slow
@pytest.mark.needs_data
def test_cli_offline_hint_names_the_cli_flags(tmp_path):
    """Without network or cached weights the command says how to run it offline, in its own flags."""
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-m", "lora_lab.finetune", "--model", "gpt2", "--subset", "5",
                        "--batch-size", "2", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 1
    assert "--model tiny --weights random" in r.stderr and "LORA_LAB_PROFILE" not in r.stderr
    assert "Traceback" not in r.stderr


def _hub_cache(root, src_dir, revision="a" * 40, blob_name=None):
    """Lay a checkpoint out as huggingface_hub's cache holds openai-community/gpt2: blobs named by sha256."""
    repo = root / "models--openai-community--gpt2"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        data = (Path(src_dir) / f).read_bytes()
        name = hashlib.sha256(data).hexdigest() if f == "model.safetensors" else hashlib.sha1(data).hexdigest()
        if f == "model.safetensors" and blob_name:
            name = blob_name
        (repo / "blobs" / name).write_bytes(data)
        (snap / f).symlink_to(Path("..") / ".." / "blobs" / name)
    return root


def test_a_local_gpt2_folder_does_not_shadow_the_hub_preset(hf_tiny_dir, tmp_path, monkeypatch):
    cache = _hub_cache(tmp_path / "cache", hf_tiny_dir)
    decoy = tmp_path / "cwd" / "gpt2"
    decoy.mkdir(parents=True)
    (decoy / "notes.txt").write_text("not a checkpoint")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.warns(UserWarning, match=r"also a folder in the working directory.*pass './gpt2'"):
        model = load_pretrained("gpt2", cache_dir=cache, local_files_only=True)
    assert model.config.source == "hub openai-community/gpt2"


# --- 12. the exact base weights are recorded, checked and carried into results ---------------------------
def test_hub_revision_and_sha256_are_recorded_and_checked(hf_tiny_dir, tmp_path):
    sha = hashlib.sha256((hf_tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    model = load_pretrained("gpt2", cache_dir=_hub_cache(tmp_path / "c1", hf_tiny_dir), local_files_only=True)
    assert (model.config.revision, model.config.weights_sha256) == ("a" * 40, sha)
    local = load_pretrained(hf_tiny_dir)
    assert local.config.weights_sha256 == sha and local.config.revision is None
    assert local.config.source.startswith("local ")
    # a cached file whose bytes are not what the hub published (its blob name) is refused
    with pytest.raises(WeightsIntegrityError, match="is corrupt.*Delete"):
        load_pretrained("gpt2", cache_dir=_hub_cache(tmp_path / "c2", hf_tiny_dir, blob_name="f" * 64),
                        local_files_only=True)


def test_adapter_names_its_base_weights_and_warns_on_another_base(hf_tiny_dir, tmp_path):
    model = load_pretrained("gpt2", cache_dir=_hub_cache(tmp_path / "c1", hf_tiny_dir), local_files_only=True)
    model.to_classifier(2)
    replace_linear_with_lora(model, 2, 2)
    save_adapter(model, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["base_weights_sha256"] == model.config.weights_sha256 and cfg["base_revision"] == "a" * 40
    # the same base name, other weights (a later revision, say): loads, with a warning naming both
    other = tmp_path / "other"
    _hf_copy(hf_tiny_dir, other)
    sd = load_file(other / "model.safetensors")
    sd["transformer.ln_f.bias"] = sd["transformer.ln_f.bias"] + 0.01
    save_file(sd, other / "model.safetensors", metadata={"format": "pt"})
    moved = load_pretrained("gpt2", cache_dir=_hub_cache(tmp_path / "c2", other, revision="b" * 40),
                            local_files_only=True).to_classifier(2)
    with pytest.warns(UserWarning, match=f"base weights with sha256 {cfg['base_weights_sha256']}"):
        load_adapter(moved, tmp_path / "a")
    same = load_pretrained("gpt2", cache_dir=tmp_path / "c1", local_files_only=True).to_classifier(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_adapter(same, tmp_path / "a")
    assert not [w for w in caught if "base weights" in str(w.message)]


@pytest.mark.needs_data
def test_finetune_metrics_and_adapter_name_the_base_weights(hf_tiny_dir, tmp_path):
    sha = hashlib.sha256((hf_tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    metrics, out = _finetune(tmp_path, "--model", str(hf_tiny_dir), "--subset", "6", "--batch-size", "4")
    assert metrics["base_weights_sha256"] == sha and metrics["base_source"].startswith("local ")
    assert metrics["max_length"] == 128  # this checkpoint's n_positions
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_weights_sha256"] == sha


def test_write_json_is_all_or_nothing(tmp_path):
    from lora_lab.utils.files import write_json

    path = write_json(tmp_path / "r.json", {"runs": [1, 2]})
    assert path.read_text(encoding="utf-8") == '{\n  "runs": [\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"runs": [object()]})  # fails before anything is written
    assert json.loads(path.read_text()) == {"runs": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary file left


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_saved_files_and_folders_follow_the_umask(tmp_path):
    """Written through a private temporary file (mkstemp: 0600) and a private staging folder (mkdtemp: 0700),
    an adapter and a merged export still come out as the umask says (022: 0644 files, 0755 folders)."""
    pytest.importorskip("transformers")
    from lora_lab.lora import export_merged

    old = os.umask(0o022)
    try:
        model = lora_tiny()
        save_adapter(model, tmp_path / "adapter")
        export_merged(model, tmp_path / "merged")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "adapter").iterdir()] + [p for p in (tmp_path / "merged").iterdir()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
    assert oct((tmp_path / "merged").stat().st_mode & 0o777) == "0o755"


def test_what_saves_loads(tmp_path, monkeypatch):
    """A compiled model saves the names of the model itself (not `_orig_mod.`-prefixed ones that load onto
    nothing); a base_model or task that load would refuse is refused at save; `~` in a path is expanded."""
    model = lora_tiny()
    save_adapter(torch.compile(model), tmp_path / "compiled")
    names = json.loads((tmp_path / "compiled" / "adapter_config.json").read_text())["layers"]
    assert names and not any("_orig_mod" in n for n in names)
    fresh = fresh_base()
    load_adapter(torch.compile(fresh), tmp_path / "compiled")
    assert torch.equal(fresh.state_dict()["transformer.h.0.attn.c_attn.lora.B"],
                       model.state_dict()["transformer.h.0.attn.c_attn.lora.B"])
    for bad in (dict(base_model=123), dict(task=["spam"])):
        with pytest.raises(TypeError, match="must be a string"):
            save_adapter(model, tmp_path / "bad", **bad)
        assert not (tmp_path / "bad").exists()
    monkeypatch.setenv("HOME", str(tmp_path))
    save_adapter(model, "~/home_adapter")
    assert (tmp_path / "home_adapter" / "adapter_config.json").is_file()


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev/zero")
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_config_or_data_file_that_is_not_a_file_is_an_error_not_a_hang(tmp_path, kind):
    """An adapter_config.json (or the data file) that is a FIFO would block its reader forever, and a link to
    /dev/zero never ends: both are refused by name before anything is read."""
    import signal

    def make(path):
        if kind == "fifo":
            os.mkfifo(path)
        else:
            os.symlink("/dev/zero", path)

    folder = tmp_path / "adapter"
    save_adapter(lora_tiny(), folder)
    (folder / "adapter_config.json").unlink()
    make(folder / "adapter_config.json")
    data = tmp_path / "data"
    data.mkdir()
    make(data / "SMSSpamCollection")
    from lora_lab.data import load_sms_spam

    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("hung"))
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match="is not a regular file"):
            load_adapter(fresh_base(), folder)
        with pytest.raises(ValueError, match="is not a regular file"):
            load_sms_spam(data)
    finally:
        signal.alarm(0)


def _rewrite_adapter(folder, edit):
    """Change an adapter file's tensors with ``edit(tensors)`` and re-sign it (a well-formed, consistent
    folder whose contents do not match what it declares)."""
    from safetensors.torch import load_file, save

    tensors = edit(load_file(str(folder / "adapter.safetensors")))
    data = save(tensors, metadata={"format": "pt"})
    (folder / "adapter.safetensors").write_bytes(data)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(sha256=hashlib.sha256(data).hexdigest(), num_tensors=len(tensors))
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


def test_every_tensor_in_an_adapter_is_applied_or_the_load_fails(tmp_path):
    """Nothing outside the declared modules is touched (a stray embedding would overwrite the frozen base), and
    nothing is silently dropped (a head weight under a layer the adapter wraps): both are refused by name."""
    save_adapter(lora_tiny(), tmp_path / "a")
    _rewrite_adapter(tmp_path / "a", lambda t: {**t, "transformer.wte.weight": torch.zeros(TINY.vocab_size,
                                                                                           TINY.n_embd)})
    model = fresh_base()
    snap = snapshot(model)
    with pytest.raises(AdapterMismatchError, match=r"transformer\.wte\.weight.*outside the LoRA layers"):
        load_adapter(model, tmp_path / "a")
    assert_unchanged(model, snap)

    head_too = replace_linear_with_lora(fresh_base(), 4, 8, exclude=())  # the head wrapped as well
    save_adapter(head_too, tmp_path / "b")
    _rewrite_adapter(tmp_path / "b", lambda t: {("classifier.weight" if k == "classifier.linear.weight" else k): v
                                                for k, v in t.items()})
    model = fresh_base()
    snap = snapshot(model)
    with pytest.raises(AdapterMismatchError, match=r"classifier\.weight.*inside classifier, which the adapter wraps"):
        load_adapter(model, tmp_path / "b")
    assert_unchanged(model, snap)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_exports_never_delete_what_they_did_not_write(tmp_path):
    """Re-exporting keeps the files a user added to an earlier export; a PEFT save into a lora_lab adapter folder
    is refused; an export onto a symlink writes into the folder it names (the link stays); a staging folder that
    a killed export left behind is removed by the next one."""
    pytest.importorskip("transformers")
    from lora_lab.lora import export_merged

    model = lora_tiny()
    out = export_merged(model, tmp_path / "merged")
    (out / "README.md").write_text("my notes")
    (out / "extra").mkdir()
    (out / "extra" / "tokenizer.json").write_text("{}")
    stale = tmp_path / ".merged.killed.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    export_merged(model, out)
    assert (out / "README.md").read_text() == "my notes" and (out / "extra" / "tokenizer.json").is_file()
    assert (out / "config.json").is_file() and not stale.exists()

    save_adapter(model, tmp_path / "ours")
    (tmp_path / "ours" / "NOTES.txt").write_text("keep")
    before = sorted(p.name for p in (tmp_path / "ours").iterdir())
    with pytest.raises(FileExistsError, match="holds a lora_lab adapter"):
        save_adapter(model, tmp_path / "ours", format="peft")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == before

    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    export_merged(model, tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target" / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


WRITER_SCRIPT = """
import sys, torch
from lora_lab.lora import replace_linear_with_lora, save_adapter
from lora_lab.models.gpt2 import GPT, PRESETS
models = []
for seed in (1, 2):
    torch.manual_seed(seed)
    m = replace_linear_with_lora(GPT(PRESETS["tiny"]).to_classifier(2), 4, 8)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * seed)
    models.append(m)
for i in range(int(sys.argv[2])):
    save_adapter(models[i % 2], sys.argv[1])
print("WROTE", sys.argv[2])
"""


@pytest.mark.slow
def test_readers_never_break_a_writer_nor_see_a_false_corrupt_adapter(tmp_path):
    """One process saves an adapter over and over while this one loads it: every save succeeds (a reader used
    to finish the writer's pending rename under it) and every load gets a whole adapter (it used to report a
    false DataIntegrityError between the writer's steps)."""
    save_adapter(lora_tiny(), tmp_path / "a")
    writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(tmp_path / "a"), "1000"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loads = 0
    while writer.poll() is None:
        load_adapter(fresh_base(), tmp_path / "a")
        loads += 1
    out, err = writer.communicate()
    assert writer.returncode == 0 and "WROTE 1000" in out, err[-2000:]
    assert loads > 10


@pytest.mark.needs_data
def test_a_run_written_over_an_earlier_one_is_whole_even_when_interrupted(tmp_path, monkeypatch):
    """Ctrl-C while a run's results are written over an earlier run's: the folder holds the earlier run, whole
    (it used to hold new metrics beside the old adapter and curves). Finished, it holds the new run only; files
    of yours beside a run are left alone."""
    from lora_lab.experiments import finetune_job

    out = tmp_path / "run"
    args = ["--model", "tiny", "--weights", "random", "--subset", "10", "--epochs", "1", "--device", "cpu",
            "--out", str(out)]
    finetune_job.main(args + ["--seed", "1"])
    first = (out / "metrics.json").read_text(), (out / "adapter" / "adapter_config.json").read_text()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_job, "plot_history", interrupted)  # after the history and adapter are staged
    with pytest.raises(KeyboardInterrupt):
        finetune_job.main(args + ["--seed", "2"])
    assert ((out / "metrics.json").read_text(), (out / "adapter" / "adapter_config.json").read_text()) == first
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left behind
    monkeypatch.undo()

    (out / "notes.txt").write_text("mine")
    finetune_job.main(args + ["--seed", "2", "--no-plot"])
    assert (out / "metrics.json").read_text() != first[0] and (out / "notes.txt").read_text() == "mine"
    assert not (out / "curves.png").exists()  # the earlier run's figure does not stay beside the new run


# --- clear errors (issue 22): each used to be a raw or misleading error; now it names the value and the fix ---------
def _peft_weights_name(fmt):
    return "adapter.safetensors" if fmt == "lora_lab" else "adapter_model.safetensors"


@pytest.mark.parametrize("fmt", ["lora_lab", "peft"])
@pytest.mark.parametrize("content, message", [
    (b"[1, 2]", "should hold a JSON object, got [1, 2]"),
    (b"null", "should hold a JSON object, got null"),
    (b'{"rank": 4,', "is not valid JSON"),
    ('{"rank": 4}'.encode("utf-16"), "is not valid JSON: it is UTF-16 text"),
])
def test_a_damaged_adapter_config_is_named_not_called_no_adapter_folder(tmp_path, fmt, content, message):
    """A PEFT folder with a damaged config was "not an adapter folder" (its format was guessed from the config
    alone); a UTF-16 config was a bare codec error. Each names the file and what is wrong with it."""
    if fmt == "peft":
        pytest.importorskip("transformers")
    save_adapter(lora_tiny(), tmp_path / "a", format=fmt)
    (tmp_path / "a" / "adapter_config.json").write_bytes(content)
    model = fresh_base()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        load_adapter(model, tmp_path / "a")
    assert "adapter_config.json" in str(e.value) and "not an adapter folder" not in str(e.value)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("fmt, key, message", [("lora_lab", "rank", "rank is 1000000000000, but the adapter's "
                                                "LoRA tensors have rank 4"),
                                               ("peft", "r", "r is 1000000000000, but the adapter's LoRA tensors "
                                                "have rank 4")])
def test_an_edited_rank_is_named_instead_of_every_tensor(tmp_path, fmt, key, message):
    """rank 10**12 in a config used to be reported as every LoRA tensor having the wrong shape."""
    if fmt == "peft":
        pytest.importorskip("transformers")
    save_adapter(lora_tiny(), tmp_path / "a", format=fmt)
    _edit_config(tmp_path / "a", lambda c: c.update({key: 10**12}))
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        load_adapter(fresh_base(), tmp_path / "a")
    assert "adapter_config.json" in str(e.value) and "Set it to 4" in str(e.value)


@pytest.mark.parametrize("value", ["score", 5, {"score": True}, [""]])
def test_peft_modules_to_save_must_be_a_list_of_names(tmp_path, value):
    """A string was split into a one-item list (PEFT would iterate its characters), a number crashed with
    "'int' object is not iterable", a dict was read as its keys."""
    pytest.importorskip("transformers")
    save_adapter(lora_tiny(), tmp_path / "a", format="peft")
    _edit_config(tmp_path / "a", lambda c: c.update(modules_to_save=value))
    with pytest.raises(ValueError, match=r"adapter_config.json: modules_to_save must be a list of module names"):
        load_adapter(fresh_base(), tmp_path / "a")


@pytest.mark.parametrize("fmt", ["lora_lab", "peft"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_bool_tensors_in_an_adapter_are_refused_by_name(tmp_path, fmt, dtype):
    """load_state_dict cast them silently (a bool LoRA B became 0.0/1.0); now the tensor and its dtype are named."""
    from safetensors.torch import save

    if fmt == "peft":
        pytest.importorskip("transformers")
    save_adapter(lora_tiny(), tmp_path / "a", format=fmt)
    weights = tmp_path / "a" / _peft_weights_name(fmt)
    tensors = load_file(str(weights))
    key = next(k for k in sorted(tensors) if "lora" in k.lower() and "B" in k)
    tensors[key] = tensors[key].to(dtype)
    data = save(tensors, metadata={"format": "pt"})
    weights.write_bytes(data)
    if fmt == "lora_lab":
        _edit_config(tmp_path / "a", lambda c: c.update(sha256=hashlib.sha256(data).hexdigest()))
    model = fresh_base()
    snap = snapshot(model)
    with pytest.raises(AdapterMismatchError, match=rf"lora\.B.*holds {str(dtype).split('.')[1]} values where the "
                                                   "model has floating-point weights"):
        load_adapter(model, tmp_path / "a")
    assert_unchanged(model, snap)


def test_an_empty_mixed_batch_is_a_clear_error(tmp_path):
    from lora_lab.lora.mixed_batch import MixedAdapterModel

    with pytest.raises(ValueError, match="non-empty mapping"):
        MixedAdapterModel(fresh_base(), {})
    save_adapter(lora_tiny(), tmp_path / "a")
    mixed = MixedAdapterModel(fresh_base(), {"a": tmp_path / "a"})
    empty = torch.zeros(0, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"the batch is empty \(input of shape \(0, 5\)\)"):
        mixed(empty, adapters=[])  # was RuntimeError: min(): Expected reduction dim to be specified ...
    with pytest.raises(ValueError, match="input_ids has no rows"):
        fresh_base()(empty)


def test_lazy_layers_are_refused_by_the_lora_wrappers():
    """A LazyConv2d or LazyLinear has no input size yet: it was a ZeroDivisionError from a zero width."""
    from lora_lab.lora import Conv2dWithLoRA, replace_conv2d_with_lora

    with pytest.raises(TypeError, match="Conv2dWithLoRA cannot wrap a LazyConv2d: .*Run one batch"):
        Conv2dWithLoRA(nn.LazyConv2d(8, 3), 4, 8)
    model = nn.Sequential(nn.LazyConv2d(8, 3))
    with pytest.raises(TypeError, match="cannot wrap '0', a LazyConv2d"):
        replace_conv2d_with_lora(model, 4, 8)
    assert type(model[0]) is nn.LazyConv2d  # unchanged
    with pytest.raises(TypeError, match="LinearWithLoRA cannot wrap a LazyLinear"):
        replace_linear_with_lora(nn.Sequential(nn.LazyLinear(8)), 4, 8)
    model(torch.zeros(1, 3, 8, 8))  # one batch: now a plain Conv2d, which wraps
    assert isinstance(replace_conv2d_with_lora(model, 4, 8)[0], Conv2dWithLoRA)


def test_bad_data_is_named_by_row_column_or_path(tmp_path):
    from lora_lab.data import balanced_split, load_sms_spam

    (tmp_path / "SMSSpamCollection").mkdir()  # the data file's place holds a folder
    with pytest.raises(ValueError, match=r"SMSSpamCollection is a folder, not a file"):
        load_sms_spam(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"the data folder .*f/sub cannot be used: .*f is a file"):
        load_sms_spam(tmp_path / "f" / "sub")  # was NotADirectoryError from mkdir
    frame = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["ham", "spam", None, "junk"]})
    with pytest.raises(ValueError, match=r"labels \['junk', (None|nan)\] have no id"):  # a None broke the sort
        balanced_split(frame)
    for text, shown in ((None, "None"), (float("nan"), "nan"), (5, "5")):
        df = pd.DataFrame({"text": pd.Series(["hello", text], index=[10, 11], dtype=object), "label_id": [0, 1]})
        with pytest.raises(ValueError, match=rf"1 message\(s\) are not text, e.g. the row with index 11: {shown}"):
            SpamDataset(df)  # was "empty or blank" for a number
    with pytest.raises(ValueError, match=r"no 'label_id' column .*label_column="):
        SpamDataset(pd.DataFrame({"text": ["hi"], "label": ["ham"]}))  # was KeyError: 'label_id'
    with pytest.raises(ValueError, match=r"no 'text' column .*text_column="):
        SpamDataset(pd.DataFrame({"message": ["hi"], "label_id": [0]}))
    for label in ("spam", float("nan"), -1):
        with pytest.raises(ValueError, match=r"1 label\(s\) in 'label_id' are not class ids .* index 1"):
            SpamDataset(pd.DataFrame({"text": ["hi", "yo"], "label_id": pd.Series([0, label], dtype=object)}))


def test_a_message_longer_than_the_context_names_the_real_parameter():
    """The hint said max_length=256, which classify_message does not take (its parameter is max_tokens)."""
    from lora_lab.course.widgets import classify_message

    class Chars:
        def encode_ordinary_batch(self, texts):
            return [[ord(c) % 500 for c in t] for t in texts]

    model = fresh_base()
    with pytest.raises(ValueError, match="pass max_tokens=256 .*to classify_message"):
        classify_message(model, Chars(), "x" * 300, reps=1)
    assert classify_message(model, Chars(), "x" * 300, max_tokens=256, reps=1).tokens == 256
    with pytest.raises(ValueError, match=r"SpamDataset\(df, max_length=256\).*classify_message\(\.\.\., "
                                         r"max_tokens=256\)"):
        model(torch.zeros(1, 300, dtype=torch.long))


def _cli_usage_error(tmp_path, capsys, monkeypatch, *args, out="run"):
    """Run the finetune command expecting a usage error; no folder may be left behind."""
    from lora_lab.experiments.finetune_job import main

    monkeypatch.setattr("lora_lab.experiments.finetune_job.spam_splits", lambda *a, **k: pytest.fail("started working"))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", "--weights", "random", "--no-plot", "--out", out, *args])
    assert e.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no --out, no data folder created
    return capsys.readouterr().err


def _offline(monkeypatch):
    def no_network(*a, **k):
        raise OSError("no network in this test")

    monkeypatch.setattr("lora_lab.data.sms.urllib.request.urlopen", no_network)


@pytest.mark.parametrize("args, message", [
    (["--out", ""], "--out is empty: name the folder"),
    (["--out", "  "], "--out is empty: name the folder"),
    (["--device", "garbage"], "--device garbage: 'garbage' is not a device torch knows"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is available here"),
    (["--device", "meta"], "--device meta: lora_lab trains on cpu, cuda or mps"),
    (["--data-dir", "nodata"], "--data-dir nodata: could not download the SMS Spam Collection"),
    (["--data-dir", "afile/sub"], "--data-dir afile/sub: afile is a file, so no folder can be made under it"),
    (["--data-dir", ""], "--data-dir is empty"),
])
def test_finetune_refuses_bad_out_device_and_data_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    """--out '' wrote the run all over the working folder; --device garbage/cuda (without CUDA) and a --data-dir
    without data crashed with a traceback after creating --out. All are usage errors now, and leave nothing."""
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    _offline(monkeypatch)
    args = args if args[0] == "--out" else ["--out", "run", *args]
    assert message in _cli_usage_error(tmp_path, capsys, monkeypatch, *args[2:], out=args[1])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, message", [
    ("afile/sub", "LORA_LAB_DATA_DIR='{tmp}/afile/sub' cannot be a folder: {tmp}/afile is a file"),
    ("nodata", "LORA_LAB_DATA_DIR={tmp}/nodata (no --data-dir given): could not download"),
])
def test_a_garbage_data_dir_variable_is_named_before_any_work(tmp_path, capsys, monkeypatch, value, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    _offline(monkeypatch)
    monkeypatch.setenv("LORA_LAB_DATA_DIR", str(tmp_path / value))
    err = _cli_usage_error(tmp_path, capsys, monkeypatch, "--device", "cpu")
    assert message.format(tmp=tmp_path) in err
    from lora_lab.data import download_sms_spam

    with pytest.raises((OSError, ValueError), match="LORA_LAB_DATA_DIR"):  # outside the command too
        download_sms_spam(progress=False)


@pytest.mark.parametrize("content", [b'{"runs": [', b"", b"[1]", '{"runs": []}'.encode("utf-16"), b'{"x": 1}'])
def test_corrupt_results_files_are_named_and_never_overwritten(tmp_path, capsys, content):
    """claims, bench --append and precision used to fail with a bare JSONDecodeError (or KeyError, or
    AttributeError) on a truncated or foreign results file; each names the file and leaves it as it was."""
    from lora_lab.experiments import bench, bf16_quality, claims
    from lora_lab.experiments.results import ResultsFile, ResultsFileError

    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=re.escape(str(path))):
        ResultsFile(path, {}, key=lambda r: r["key"])
    commands = [
        lambda: claims.main(["--profile", "smoke", "--out", str(path)]),
        lambda: claims.main(["--profile", "smoke", "--analyse-only", "--out", str(path)]),
        lambda: bf16_quality.main(["report", str(path)]),
        lambda: bf16_quality.main(["quality", "--out", str(path)]),
    ]
    if content != b'{"x": 1}':  # bench --append adds its keys to any JSON object
        commands.append(lambda: bench.main(["--append", "--out", str(path), "--ddp-comm"]))
    for command in commands:
        with pytest.raises(SystemExit) as e:
            command()
        assert str(path) in str(e.value) and "left as it was" in str(e.value)
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_scaling_needs_a_positive_rank():
    from lora_lab.course.widgets.budget import SCALING_RULE_LABELS, scaling_factor
    from lora_lab.lora.layer import lora_scaling

    for rank in (0, -4):
        for rslora in (False, True):
            with pytest.raises(ValueError, match=f"rank must be a positive int, got {rank}"):
                lora_scaling(rank, 16, rslora)  # was ZeroDivisionError, -4.0 or a math domain error
        for rule in SCALING_RULE_LABELS:
            with pytest.raises(ValueError, match=f"rank must be a positive int, got {rank}"):
                scaling_factor(rule, rank, 16)
    assert lora_scaling(16, 32) == 2.0 and scaling_factor("raw α", 16, 32) == 32.0


def test_first_update_norm_refuses_an_overflow_instead_of_answering_zero():
    from lora_lab.course.widgets.budget import first_update_norm

    with pytest.raises(ValueError, match=r"alpha=1e\+30 with lr=0.001 overflows float32"):
        first_update_norm(16, alpha=1e30)  # was 0.0: Adam's squared gradients were inf
    with pytest.raises(ValueError, match="overflows float32"):
        first_update_norm(16, "raw α", alpha=1e39)  # was NaN
    with pytest.raises(ValueError, match="overflows float32"):
        first_update_norm(16, lr=1e40)  # was RuntimeError: value cannot be converted to type float
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        first_update_norm(16, lr=-1)


@pytest.mark.parametrize("fmt", ["lora_lab", "peft"])
def test_save_adapter_onto_a_file_names_it_and_leaves_it(tmp_path, fmt):
    if fmt == "peft":
        pytest.importorskip("transformers")
    (tmp_path / "f").write_text("mine")
    for target, problem in ((tmp_path / "f", f"{tmp_path / 'f'} is a file, not a folder"),
                            (tmp_path / "f" / "sub", f"{tmp_path / 'f'} is a file, so no folder can be made")):
        message = f"save_adapter writes a folder at {target}, but {problem}"
        with pytest.raises(FileExistsError, match=re.escape(message)):
            save_adapter(lora_tiny(), target, format=fmt)
    assert (tmp_path / "f").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]
