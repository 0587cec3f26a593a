"""Our GPT-2 against the reference (transformers), our LoRA against PEFT's, and the classifier."""
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_lab.lora import lora_layers, replace_linear_with_lora
from lora_lab.models.gpt2 import CheckpointMismatchError, WeightsUnavailableError, load_pretrained

transformers = pytest.importorskip("transformers")


def test_logits_match_transformers(hf_tiny_dir):
    ref = transformers.GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    ours = load_pretrained(hf_tiny_dir).eval()
    torch.manual_seed(0)
    idx = torch.randint(0, 50257, (3, 40))
    with torch.no_grad():
        expected = ref(idx).logits
        got = ours(idx)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_greedy_continuation_matches_transformers(hf_tiny_dir):
    ref = transformers.GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    ours = load_pretrained(hf_tiny_dir).eval()
    prompt = torch.tensor([[15496, 11, 995, 0, 314]])  # "Hello, world! I"
    expected = ref.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=50256,
                            attention_mask=torch.ones_like(prompt))
    assert torch.equal(ours.generate(prompt, max_new_tokens=12), expected)


def test_single_safetensors_file_with_hub_key_names(hf_tiny_dir, tmp_path):
    # openai-community/gpt2's own model.safetensors has no "transformer." prefix and old mask buffers
    sd = load_file(hf_tiny_dir / "model.safetensors")
    sd = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    sd["h.0.attn.bias"] = torch.ones(1, 1, 128, 128)
    save_file(sd, tmp_path / "model.safetensors")
    shutil.copy(hf_tiny_dir / "config.json", tmp_path / "config.json")
    a, b = load_pretrained(tmp_path), load_pretrained(hf_tiny_dir)
    idx = torch.randint(0, 50257, (2, 9))
    assert torch.equal(a(idx), b(idx))


def test_mismatched_checkpoint_lists_the_keys(hf_tiny_dir, tmp_path):
    sd = load_file(hf_tiny_dir / "model.safetensors")
    del sd["transformer.h.1.mlp.c_fc.weight"]
    sd["transformer.h.0.ln_1.weight"] = torch.ones(65)
    sd["transformer.extra.weight"] = torch.ones(3)
    save_file(sd, tmp_path / "model.safetensors")
    shutil.copy(hf_tiny_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing 1: ['transformer.h.1.mlp.c_fc.weight']" in msg
    assert "unexpected 1: ['transformer.extra.weight']" in msg
    assert "transformer.h.0.ln_1.weight: checkpoint (65,) vs model (64,)" in msg


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailableError, match="pass a local folder with model.safetensors") as e:
        load_pretrained("gpt2", cache_dir=tmp_path, local_files_only=True)
    assert "openai-community/gpt2" in str(e.value)
    # the library cannot know how it was called: the notebooks' loader (experiments.profiles.load_gpt2) adds the
    # profiles, the command line its own flags; a profile variable the caller ignores is no help here
    assert "LORA_LAB_PROFILE" not in str(e.value)
    # a hub that cannot be reached (a closed port on this machine) gives the same clear error, after trying
    # again on the retry schedule (shrunk from 23 s to nothing; the sleeps are recorded, not slept)
    waits = []
    monkeypatch.setattr("lora_lab.models.gpt2.HUB_RETRY_WAITS_S", (0.5, 2))
    monkeypatch.setattr("lora_lab.models.gpt2.time.sleep", waits.append)
    with pytest.raises(WeightsUnavailableError, match="Connect to the internet"):
        load_pretrained("gpt2", cache_dir=tmp_path, endpoint="http://127.0.0.1:9")
    assert waits == [0.5, 2]  # three tries, then the error


def test_hub_download_path_uses_the_cache(hf_tiny_dir, tmp_path):
    """Lay the tiny checkpoint out as huggingface_hub's cache would hold openai-community/gpt2 and load
    it by preset name with local_files_only: the same code path as after a real download."""
    snap = tmp_path / "models--openai-community--gpt2" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(hf_tiny_dir / f, snap / f)
    (tmp_path / "models--openai-community--gpt2" / "refs").mkdir()
    (tmp_path / "models--openai-community--gpt2" / "refs" / "main").write_text("0" * 40)
    model = load_pretrained("gpt2", cache_dir=tmp_path, local_files_only=True)
    assert model.config.n_embd == 64 and model.config.name == "gpt2"


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="neither a local file/folder nor one of"):
        load_pretrained("gpt3")


def test_classifier_padding_invariance(tiny_model):
    torch.manual_seed(0)
    tiny_model.to_classifier(2)
    seqs = [torch.randint(0, 50256, (n,)) for n in (5, 17, 9, 1)]
    single = torch.cat([tiny_model(s[None], torch.tensor([len(s)])) for s in seqs])
    for pad_to in (17, 40):
        batch = torch.full((len(seqs), pad_to), 50256)
        for i, s in enumerate(seqs):
            batch[i, :len(s)] = s
        padded = tiny_model(batch, torch.tensor([len(s) for s in seqs]))
        torch.testing.assert_close(padded, single, atol=1e-5, rtol=1e-5)
        assert torch.equal(padded.argmax(-1), single.argmax(-1))
    # the textbook's choice (the last position, padding or not) is not invariant
    last_pos = tiny_model(batch)
    assert not torch.allclose(last_pos, single, atol=1e-3)


def test_classifier_head_is_new_and_trainable(tiny_model):
    tiny_model.to_classifier(3)
    assert tiny_model.classifier.weight.shape == (3, 64) and tiny_model.classifier.weight.requires_grad
    assert tiny_model.lm_head is None
    with pytest.raises(RuntimeError, match="generation needs the LM head"):
        tiny_model.generate(torch.tensor([[1]]), 1)


def test_too_long_sequence_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="longer than the model's block_size 256"):
        tiny_model(torch.zeros(1, 257, dtype=torch.long))


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_matches_peft(hf_tiny_dir, use_rslora):
    """Same base weights, same A and B: our LoRA GPT-2 and PEFT's LoRA on transformers' GPT-2 agree."""
    peft = pytest.importorskip("peft")
    rank, alpha = 4, 8
    ref = transformers.GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, use_rslora=use_rslora,
                          target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    ref = peft.get_peft_model(ref, cfg).eval()
    ours = replace_linear_with_lora(load_pretrained(hf_tiny_dir), rank, alpha, use_rslora=use_rslora).eval()
    torch.manual_seed(3)
    peft_modules = {n.removeprefix("base_model.model."): m for n, m in ref.named_modules()
                    if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
    assert sorted(peft_modules) == sorted(lora_layers(ours))
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.lora.B.normal_(std=0.2)  # a "trained" B so the update is not zero
            pm = peft_modules[name]
            pm.lora_A["default"].weight.copy_(layer.lora.A.T)  # PEFT stores A as Linear(in, r).weight: (r, in)
            pm.lora_B["default"].weight.copy_(layer.lora.B.T)
            assert pm.scaling["default"] == pytest.approx(layer.lora.scaling)
    idx = torch.randint(0, 50257, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx).logits, atol=5e-5, rtol=1e-5)
        base = transformers.GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()(idx).logits
    assert not torch.allclose(ours(idx), base, atol=1e-3)  # the adapters really changed the output


def test_linear_shapes_names_the_valid_targets():
    from lora_lab.models.gpt2 import PRESETS, linear_shapes
    tiny = PRESETS["tiny"]  # 2 blocks, width 64
    assert linear_shapes(tiny, "attention") == [("transformer.h.0.attn.c_attn", 64, 192),
                                                ("transformer.h.0.attn.c_proj", 64, 64),
                                                ("transformer.h.1.attn.c_attn", 64, 192),
                                                ("transformer.h.1.attn.c_proj", 64, 64)]
    assert len(linear_shapes(tiny)) == 8 and len(linear_shapes(tiny, "mlp")) == 4
    with pytest.raises(ValueError, match=r"target must be one of \['all', 'attention', 'mlp'\].*got 'attn'"):
        linear_shapes(tiny, "attn")
