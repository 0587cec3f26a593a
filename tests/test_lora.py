"""LoRA layer, wrapping, merging, counting and adapter files."""
import json
import math

import pytest
import torch
from torch import nn

from lora_lab.lora import (
    AdapterMismatchError,
    LinearWithLoRA,
    LoRALayer,
    check_adapter_fits,
    count_parameters,
    load_adapter,
    lora_layers,
    lora_parameter_count,
    lora_parameter_names,
    lora_state_dict,
    mark_only_lora_trainable,
    mark_trainable,
    merge_lora,
    read_adapter,
    replace_linear_with_lora,
    save_adapter,
    selects,
    unmerge_lora,
)
from lora_lab.models.gpt2 import GPT, PRESETS, linear_shapes
from lora_lab.utils.files import DataIntegrityError


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Sequential(nn.Linear(20, 30), nn.ReLU()), nn.Linear(30, 2))


# --- the textbook API, exactly as written in the course's source ---------------------
def test_textbook_signatures_and_structure():
    layer = LoRALayer(10, 20, 4, 8)
    assert layer.A.shape == (10, 4) and layer.B.shape == (4, 20)
    assert torch.all(layer.B == 0)
    lin = nn.Linear(10, 20)
    wrapped = LinearWithLoRA(lin, 4, 8)
    assert wrapped.linear is lin and wrapped.lora.A.shape == (10, 4) and wrapped.lora.B.shape == (4, 20)
    model = mlp()
    out = replace_linear_with_lora(model, 4, 8)
    assert out is model  # in place, also returned
    assert isinstance(model[0], LinearWithLoRA) and isinstance(model[2][0], LinearWithLoRA)  # recursive
    assert isinstance(model[3], LinearWithLoRA)  # a plain Sequential has no head name: wrapped


@pytest.mark.parametrize("init, fan_in", [("peft", 256), ("textbook", 16)])
def test_A_init_bound(init, fan_in):
    """peft: U(+-1/sqrt(in_dim)) as in loralib and PEFT; textbook: kaiming_uniform_(a=sqrt(5)) on the
    (in_dim, rank) tensor, whose fan-in PyTorch takes to be rank."""
    torch.manual_seed(1)
    layer = LoRALayer(256, 64, 16, 16, init=init)
    bound = 1 / math.sqrt(fan_in)
    assert layer.A.shape == (256, 16) and layer.init == init
    assert layer.A.abs().max() <= bound + 1e-6
    assert layer.A.abs().max() > 0.9 * bound


def test_default_A_init_matches_peft():
    """The default A has PEFT's distribution: compare with PEFT's own lora_A on the same Linear shape."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(512, 64))
    ref = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=8, target_modules=["0"]))
    peft_A = ref.base_model.model[0].lora_A["default"].weight  # (rank, in_dim)
    ours = LoRALayer(512, 64, 8, 8).A  # (in_dim, rank)
    assert peft_A.shape == ours.T.shape
    for a in (peft_A, ours):
        assert a.abs().max() <= 1 / math.sqrt(512) + 1e-6
        assert a.abs().max() > 0.9 / math.sqrt(512)
    assert abs(peft_A.std().item() - ours.std().item()) < 0.1 * ours.std().item()


def test_unknown_init_is_an_error():
    with pytest.raises(ValueError, match="init must be one of"):
        LoRALayer(8, 8, 2, 2, init="kaiming")
    with pytest.raises(ValueError, match="init must be one of"):
        replace_linear_with_lora(mlp(), 2, 2, init="xavier")


def test_zero_init_B_gives_identical_outputs():
    model = mlp()
    x = torch.randn(5, 10)
    before = model(x)
    replace_linear_with_lora(model, 4, 8)
    assert torch.equal(model(x), before)


def test_scaling_alpha_over_rank_and_rslora():
    assert LoRALayer(8, 8, rank=4, alpha=8).scaling == 2.0
    assert LoRALayer(32, 32, rank=16, alpha=16).scaling == 1.0
    assert LoRALayer(32, 32, rank=16, alpha=16, use_rslora=True).scaling == 4.0
    layer = LoRALayer(6, 5, rank=3, alpha=6)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 6)
    assert torch.allclose(layer(x), 2.0 * (x @ layer.A @ layer.B))


def test_forward_is_linear_plus_scaled_update():
    lin = nn.Linear(6, 5)
    w = LinearWithLoRA(lin, 2, 4)
    with torch.no_grad():
        w.lora.B.normal_()
    x = torch.randn(3, 6)
    assert torch.allclose(w(x), lin(x) + 2.0 * x @ w.lora.A @ w.lora.B, atol=1e-6)


def test_dropout_only_on_lora_path():
    torch.manual_seed(0)
    w = LinearWithLoRA(nn.Linear(6, 5), 2, 2, dropout=0.5).train()
    x = torch.randn(3, 6)
    assert torch.equal(w(x), w.linear(x))  # B = 0: dropout on the LoRA path cannot show yet
    with torch.no_grad():
        w.lora.B.normal_()
    assert not torch.allclose(w(x), w(x))  # stochastic in training
    w.eval()
    assert torch.equal(w(x), w(x))


@pytest.mark.parametrize("rank", [0, -1, 1.5, "4", True, None])
def test_bad_rank(rank):
    with pytest.raises((ValueError, TypeError), match="rank must be a positive int"):
        LoRALayer(4, 4, rank, 1)
    with pytest.raises((ValueError, TypeError), match="rank must be a positive int"):
        replace_linear_with_lora(mlp(), rank, 1)


@pytest.mark.parametrize("alpha", [0, -2, float("nan"), "8"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        LoRALayer(4, 4, 2, alpha)


@pytest.mark.parametrize("dropout", [1.0, -0.1, 2])
def test_bad_dropout(dropout):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        replace_linear_with_lora(mlp(), 2, 2, dropout=dropout)


def test_model_without_linear_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="no nn.Linear layer at all"):
        replace_linear_with_lora(nn.Sequential(nn.Conv1d(3, 3, 1), nn.ReLU()), 2, 2)
    with pytest.raises(ValueError, match="check target"):
        replace_linear_with_lora(mlp(), 2, 2, target=["nothing.matches"])


def test_wrapping_twice_does_not_nest():
    model = mlp()
    replace_linear_with_lora(model, 4, 8)
    n = len(lora_layers(model))
    replace_linear_with_lora(model, 4, 8)
    assert len(lora_layers(model)) == n == 3
    assert not any(isinstance(m.linear, LinearWithLoRA) for m in lora_layers(model).values())
    with pytest.raises(ValueError, match="already wrapped with rank=4"):
        replace_linear_with_lora(model, 8, 8)


def test_merge_unmerge_equal_outputs_and_idempotent():
    model = mlp()
    replace_linear_with_lora(model, 4, 8)
    for m in lora_layers(model).values():
        with torch.no_grad():
            m.lora.B.normal_(std=0.1)
    x = torch.randn(7, 10)
    y = model(x)
    w0 = model[0].linear.weight.clone()
    merge_lora(model)
    assert torch.allclose(model(x), y, atol=1e-5, rtol=1e-5)
    w_merged = model[0].linear.weight.clone()
    assert not torch.allclose(w_merged, w0)
    merge_lora(model)  # second merge must not add the update again
    assert torch.equal(model[0].linear.weight, w_merged)
    assert torch.allclose(model(x), y, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    unmerge_lora(model)
    assert torch.allclose(model[0].linear.weight, w0, atol=1e-6)
    assert torch.allclose(model(x), y, atol=1e-5, rtol=1e-5)


def test_gpt_targets_and_head_skipped_by_default(tiny_model):
    tiny_model.to_classifier(2)
    replace_linear_with_lora(tiny_model, 2, 2, target="attention")
    names = sorted(lora_layers(tiny_model))
    assert names == sorted(f"transformer.h.{i}.attn.{k}" for i in range(2) for k in ("c_attn", "c_proj"))
    assert isinstance(tiny_model.classifier, nn.Linear)


def test_mlp_target_and_head_by_argument(tiny_cfg):
    model = GPT(tiny_cfg).to_classifier(2)
    replace_linear_with_lora(model, 2, 2, target="mlp")
    assert sorted(lora_layers(model)) == sorted(f"transformer.h.{i}.mlp.{k}" for i in range(2)
                                                for k in ("c_fc", "c_proj"))
    model = GPT(tiny_cfg).to_classifier(2)
    replace_linear_with_lora(model, 2, 2, exclude=())
    assert "classifier" in lora_layers(model)


@pytest.mark.parametrize("name", ["tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
@pytest.mark.parametrize("target", ["all", "attention", "mlp"])
def test_closed_form_parameter_count_equals_counted(name, target):
    cfg = PRESETS[name]
    with torch.device("meta"):  # shapes only, no memory: works for GPT-2 XL too
        model = GPT(cfg).to_classifier(2)
        base = count_parameters(model).total
        replace_linear_with_lora(model, 8, 16, target=target)
    counted = count_parameters(model).total - base
    formula = lora_parameter_count([(i, o) for _, i, o in linear_shapes(cfg, target)], 8)
    assert counted == formula
    d, L = cfg.n_embd, cfg.n_layer
    assert formula == {"all": 16, "attention": 6, "mlp": 10}[target] * 8 * d * L


def test_preset_sizes_are_gpt2_sizes():
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, n in expected.items():
        with torch.device("meta"):
            assert count_parameters(GPT(PRESETS[name])).total == n


def test_mark_only_lora_trainable_keeps_head_trainable(tiny_model):
    tiny_model.to_classifier(2)
    replace_linear_with_lora(tiny_model, 4, 4)
    mark_only_lora_trainable(tiny_model)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert "classifier.weight" in trainable and "classifier.bias" in trainable
    assert all(".lora." in n or n.startswith("classifier.") for n in trainable)
    lora_n = lora_parameter_count([(i, o) for _, i, o in linear_shapes(tiny_model.config)], 4)
    assert count_parameters(tiny_model).trainable == lora_n + 64 * 2 + 2
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_trainable(GPT(tiny_model.config))


def _trained_like(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_save_load_adapter_roundtrip_and_task_switch(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny_cfg).to_classifier(2)
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    replace_linear_with_lora(model, 4, 8)
    mark_only_lora_trainable(model)
    x, lengths = torch.randint(0, 50257, (3, 12)), torch.tensor([12, 5, 9])
    _trained_like(model, 1)
    y_task1 = model(x, lengths)
    save_adapter(model, tmp_path / "task1", task="spam")
    _trained_like(model, 2)
    y_task2 = model(x, lengths)
    save_adapter(model, tmp_path / "task2", task="other")
    cfg = json.loads((tmp_path / "task1" / "adapter_config.json").read_text())
    assert cfg["rank"] == 4 and cfg["alpha"] == 8 and cfg["scaling_rule"] == "alpha/rank"
    assert cfg["base_model"] == "tiny" and len(cfg["layers"]) == 8
    assert set(lora_state_dict(model, ["classifier"])) == set(
        __import__("safetensors.torch").torch.load_file(tmp_path / "task1" / "adapter.safetensors"))

    # a fresh base model (same base weights): loading wraps it and reproduces task 1 exactly
    fresh = GPT(tiny_cfg).to_classifier(2)
    fresh.load_state_dict(base_sd)
    load_adapter(fresh, tmp_path / "task1")
    assert torch.equal(fresh(x, lengths), y_task1)
    load_adapter(fresh, tmp_path / "task2")  # switch task on the same base
    assert torch.equal(fresh(x, lengths), y_task2)
    load_adapter(fresh, tmp_path / "task1")
    assert torch.equal(fresh(x, lengths), y_task1)


def test_adapter_for_another_base_or_shape_is_a_clear_error(tiny_cfg, tmp_path):
    from dataclasses import replace as dc_replace
    model = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8)
    save_adapter(model, tmp_path / "a")
    with torch.device("meta"):
        other = GPT(PRESETS["gpt2"]).to_classifier(2)
    with pytest.raises(AdapterMismatchError, match="trained on base model 'tiny'.*'gpt2'"):
        load_adapter(other, tmp_path / "a")
    wider = GPT(dc_replace(tiny_cfg, n_embd=128)).to_classifier(2)
    with pytest.raises(AdapterMismatchError, match="does not fit this model"):
        load_adapter(wider, tmp_path / "a")
    attn_only = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8, target="attention")
    with pytest.raises(AdapterMismatchError, match="in the adapter only"):
        load_adapter(attn_only, tmp_path / "a")
    other_rank = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 2, 8)
    with pytest.raises(AdapterMismatchError, match=r"adapter \(64, 4\) vs model \(64, 2\)"):
        load_adapter(other_rank, tmp_path / "a")


def test_corrupt_adapter_file_is_detected(tiny_cfg, tmp_path):
    model = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8)
    save_adapter(model, tmp_path / "a")
    f = tmp_path / "a" / "adapter.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match="corrupt or were changed: sha256 [0-9a-f]{64}, expected"):
        load_adapter(GPT(tiny_cfg).to_classifier(2), tmp_path / "a")
    assert not list((tmp_path / "a").glob("*.tmp"))  # atomic writes leave no temp files


# --- issue 14: hyper-parameters in one place, one meaning of "extra" -----------------------------------
def test_scaling_is_derived_and_cannot_drift():
    layer = LoRALayer(8, 8, rank=4, alpha=8)
    assert layer.scaling == 2.0
    layer.alpha = 16  # scaling follows alpha: there is no second copy to forget
    assert layer.scaling == 4.0
    layer.use_rslora = True
    assert layer.scaling == 8.0
    layer.scaling = 3.0  # setting it sets alpha under the layer's rule (notebook 2 mimics raw alpha this way)
    assert layer.alpha == 6 and layer.scaling == 3.0
    layer.use_rslora = False
    layer.scaling = 16
    assert layer.alpha == 64 and type(layer.alpha) is int
    with pytest.raises(ValueError, match="scaling must be a positive number"):
        layer.scaling = 0
    assert layer.hparams() == {"rank": 4, "alpha": 64, "use_rslora": False, "dropout": 0.0}


def test_save_refuses_layers_that_disagree(tiny_cfg, tmp_path):
    model = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8)
    lora_layers(model)["transformer.h.1.mlp.c_fc"].lora.alpha = 16
    with pytest.raises(ValueError, match=r"layers differ: .*'alpha': 8.* in 7 layer\(s\).*'alpha': 16.* in 1 "
                                         r"layer\(s\), e\.g\. 'transformer\.h\.1\.mlp\.c_fc'"):
        save_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match="layers differ"):
        save_adapter(model, tmp_path / "p", format="peft")
    assert not (tmp_path / "a").exists() and not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="format must be one of"):
        save_adapter(model, tmp_path / "x", format="pt")


@pytest.mark.parametrize("saved, model_had", [(0.1, 0.0), (0.0, 0.3), (0.2, 0.2)])
def test_saved_dropout_is_honoured(tiny_cfg, tmp_path, saved, model_had):
    torch.manual_seed(0)
    src = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8, dropout=saved)
    save_adapter(src, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["dropout"] == saved
    fresh = GPT(tiny_cfg).to_classifier(2)
    load_adapter(fresh, tmp_path / "a")  # wrapped by the load
    wrapped = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8, dropout=model_had)
    load_adapter(wrapped, tmp_path / "a")  # switching tasks: the adapter's dropout replaces the layers' own
    for m in (fresh, wrapped):
        assert {layer.lora.dropout_p for layer in lora_layers(m).values()} == {saved}
        assert all(isinstance(layer.lora.dropout, nn.Dropout if saved else nn.Identity)
                   for layer in lora_layers(m).values())


def test_loading_is_read_then_check_then_apply(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    src = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8, use_rslora=True, dropout=0.1)
    save_adapter(src, tmp_path / "a")
    adapter = read_adapter(tmp_path / "a")  # no model involved
    assert adapter.hparams == {"rank": 4, "alpha": 8, "use_rslora": True, "dropout": 0.1}
    assert set(adapter.tensors) == set(lora_state_dict(src, ["classifier"]))
    base = GPT(tiny_cfg).to_classifier(2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    assert check_adapter_fits(base, adapter) == sorted(lora_layers(src))  # what would be wrapped ...
    assert not lora_layers(base)  # ... is not yet
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


def test_extra_means_the_same_in_training_and_saving(tiny_cfg):
    model = replace_linear_with_lora(GPT(tiny_cfg).to_classifier(2), 4, 8)
    for extra in (["classifier"], ["transformer.ln_f"], ["*.ln_f.*", "classifier.bias"], ["transformer.h.1.ln_*"]):
        mark_only_lora_trainable(model, extra)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trained == set(lora_state_dict(model, extra)), extra  # what trains is what an adapter saves
        assert trained - lora_parameter_names(model)  # the extra modules are in it
    assert selects("classifier.weight", ["classifier"]) and not selects("classifier2.weight", ["classifier"])
    with pytest.raises(TypeError, match=r"write \['classifier'\]"):
        lora_state_dict(model, "classifier")  # a bare string would be read letter by letter


def test_lora_tensors_are_found_by_layer_not_by_name():
    """A module that is merely called "lora" is not a LoRA layer: it is frozen with the base and not saved."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lora = nn.Linear(4, 4)  # an unlucky name
            self.body = nn.Linear(4, 4)
            self.classifier = nn.Linear(4, 2)

    net = replace_linear_with_lora(Net(), 2, 2, target=["body"])
    assert lora_parameter_names(net) == {"body.lora.A", "body.lora.B"}
    mark_only_lora_trainable(net)
    assert not net.lora.weight.requires_grad
    assert set(lora_state_dict(net)) == {"body.lora.A", "body.lora.B"}
    assert mark_trainable(net, ["lora"]) == ["lora.weight", "lora.bias"]
