"""LoRA for nn.Conv2d: the matrix view, parity with PEFT's Conv2d LoRA, bad input, merging, freezing, adapter files."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lora_lab.lora import (
    AdapterMismatchError,
    Conv2dLoRALayer,
    Conv2dWithLoRA,
    conv_lora_parameter_count,
    count_parameters,
    load_adapter,
    lora_layers,
    mark_only_lora_trainable,
    merge_lora,
    replace_conv2d_with_lora,
    replace_linear_with_lora,
    save_adapter,
    unmerge_lora,
)


class Net(nn.Module):
    """Convolutions of every supported kind (3x3, stride 2, 'same' padding, a non-square kernel, 1x1) and a head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(12, 12, (3, 1), padding="same"), nn.ReLU(),
            nn.Conv2d(12, 6, 1, bias=False), nn.ReLU())
        self.classifier = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


CONVS = ["features.0", "features.2", "features.4", "features.6"]


def net(seed=0):
    torch.manual_seed(seed)
    return Net()


def _trained_like(model, seed, std=0.1):
    """Give every LoRA B (and the head) random values: an update that is not zero, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora.B.copy_(torch.randn(m.lora.B.shape, generator=g) * std)


def x_batch(seed=1, n=4):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- the layer ---------------------------------------------------------------------------------------------
def test_shapes_zero_start_and_structure():
    layer = Conv2dLoRALayer(8, 16, 3, rank=4, alpha=8)
    assert layer.A.shape == (4, 8, 3, 3) and layer.B.shape == (16, 4, 1, 1)  # A: the kernel, B: 1x1
    assert torch.all(layer.B == 0) and layer.scaling == 2.0
    model, x = net(), x_batch()
    before = model(x)
    out = replace_conv2d_with_lora(model, 2, 4)
    assert out is model and sorted(lora_layers(model)) == CONVS
    assert isinstance(model.classifier, nn.Linear)  # Linear layers are left alone
    assert torch.equal(model(x), before)  # B = 0: exactly the base model


def test_update_is_a_low_rank_matrix_on_patches():
    """The lesson of notebook 9 in one test: conv(x, W) is W (out x in*k*k) times the unfolded patches, and
    the LoRA path B(A(x)) is the convolution with delta_weight, a matrix of rank <= r in that view."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=False)
    x = torch.randn(2, 5, 6, 6)
    patches = F.unfold(x, 3, padding=1)  # (batch, in*k*k, pixels)
    as_matmul = (conv.weight.flatten(1) @ patches).view(2, 7, 6, 6)
    torch.testing.assert_close(conv(x), as_matmul, atol=1e-5, rtol=1e-5)
    w = Conv2dWithLoRA(conv, rank=2, alpha=3)
    with torch.no_grad():
        w.lora.B.normal_()
    delta = w.lora.delta_weight()
    assert delta.shape == conv.weight.shape
    assert torch.linalg.matrix_rank(delta.flatten(1)) == 2
    torch.testing.assert_close(w.lora(x), F.conv2d(x, delta, padding=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w(x), conv(x) + F.conv2d(x, delta, padding=1), atol=1e-5, rtol=1e-5)
    # by hand: B @ A on the matrix view, times the scaling 3/2
    by_hand = 1.5 * (w.lora.B.flatten(1) @ w.lora.A.flatten(1)).view(7, 5, 3, 3)
    torch.testing.assert_close(delta, by_hand)


@pytest.mark.parametrize("init, fan_in", [("peft", 8 * 9), ("textbook", 4)])
def test_A_init_bound(init, fan_in):
    torch.manual_seed(1)
    A = Conv2dLoRALayer(8, 16, 3, rank=4, alpha=4, init=init).A
    bound = 1 / math.sqrt(fan_in)
    assert A.abs().max() <= bound + 1e-6 and A.abs().max() > 0.9 * bound


def test_default_A_init_matches_peft():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    ref = peft.get_peft_model(nn.Sequential(nn.Conv2d(32, 64, 3)), peft.LoraConfig(r=8, lora_alpha=8,
                                                                                    target_modules=["0"]))
    peft_A = ref.base_model.model[0].lora_A["default"].weight
    ours = Conv2dLoRALayer(32, 64, 3, rank=8, alpha=8).A
    assert peft_A.shape == ours.shape == (8, 32, 3, 3)
    for a in (peft_A, ours):
        assert 0.9 / math.sqrt(32 * 9) < a.abs().max() <= 1 / math.sqrt(32 * 9) + 1e-6
    assert abs(peft_A.std().item() - ours.std().item()) < 0.1 * ours.std().item()


# --- parity with PEFT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_rslora", [False, True])
def test_equal_to_peft_conv2d_lora(use_rslora):
    """Same base weights, same A and B (copied one to one: the layouts are PEFT's): same outputs, same delta
    weights, and the same merged kernels."""
    peft = pytest.importorskip("peft")
    rank, alpha = 3, 5
    ours = replace_conv2d_with_lora(net(), rank, alpha, use_rslora=use_rslora).eval()
    ref = peft.get_peft_model(net(), peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, use_rslora=use_rslora,
                                                     target_modules=CONVS)).eval()
    _trained_like(ours, 2, std=0.3)
    pm = {n.removeprefix("base_model.model."): m for n, m in ref.named_modules()
          if "default" in getattr(m, "lora_A", {})}
    assert sorted(pm) == sorted(lora_layers(ours)) == CONVS
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            pm[name].lora_A["default"].weight.copy_(layer.lora.A)
            pm[name].lora_B["default"].weight.copy_(layer.lora.B)
            assert pm[name].scaling["default"] == pytest.approx(layer.lora.scaling)
            torch.testing.assert_close(layer.lora.delta_weight(), pm[name].get_delta_weight("default"),
                                       atol=1e-6, rtol=1e-5)
    x = x_batch(n=5)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(y, net()(x), atol=1e-3)  # the adapters really change the output
        merged = ref.merge_and_unload()
        merge_lora(ours)
        for name, layer in lora_layers(ours).items():
            torch.testing.assert_close(layer.conv.weight, merged.get_submodule(name).weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours(x), y, atol=1e-5, rtol=1e-5)


# --- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, -1, 1.5, "4", True, None])
def test_bad_rank(rank):
    with pytest.raises((ValueError, TypeError), match="rank must be a positive int"):
        Conv2dWithLoRA(nn.Conv2d(3, 4, 3), rank, 1)
    with pytest.raises((ValueError, TypeError), match="rank must be a positive int"):
        replace_conv2d_with_lora(net(), rank, 1)


@pytest.mark.parametrize("alpha", [0, -2, float("nan"), "8"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        Conv2dWithLoRA(nn.Conv2d(3, 4, 3), 2, alpha)


@pytest.mark.parametrize("dropout", [1.0, -0.1])
def test_bad_dropout(dropout):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        replace_conv2d_with_lora(net(), 2, 2, dropout=dropout)


def test_rank_above_the_matrix_view_warns():
    """A 3x3 conv from 1 channel is a 16 x 9 matrix: a rank above 9 only adds parameters."""
    with pytest.warns(UserWarning, match=r"16 x 9.*rank <= 9"):
        Conv2dWithLoRA(nn.Conv2d(1, 16, 3), 10, 10)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Conv2dWithLoRA(nn.Conv2d(1, 16, 3), 9, 9)


@pytest.mark.parametrize("conv, what", [(nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
                                        (nn.Conv2d(4, 4, 3, groups=4), "groups=4"),
                                        (nn.Conv2d(4, 4, 3, dilation=2), r"dilation=\(2, 2\)"),
                                        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode")])
def test_unsupported_convolutions_are_refused(conv, what):
    with pytest.raises(ValueError, match=f"{what}.*groups=1, dilation=1 and zero padding only"):
        Conv2dWithLoRA(conv, 2, 2)
    model = nn.Sequential(nn.Conv2d(4, 4, 1), conv)
    with pytest.raises(ValueError, match=r"^1 is a Conv2d.*exclude"):
        replace_conv2d_with_lora(model, 2, 2)
    assert not lora_layers(model)  # checked before anything changed: not half wrapped
    replace_conv2d_with_lora(model, 2, 2, exclude=["1"])  # the fix the message names
    assert sorted(lora_layers(model)) == ["0"]


def test_not_a_conv2d_and_nothing_to_wrap():
    with pytest.raises(TypeError, match="wraps an nn.Conv2d, got Linear"):
        Conv2dWithLoRA(nn.Linear(3, 3), 2, 2)
    with pytest.raises(TypeError, match="wraps an nn.Conv2d, got Conv1d"):
        Conv2dWithLoRA(nn.Conv1d(3, 3, 3), 2, 2)
    with pytest.raises(ValueError, match="no nn.Conv2d layer at all"):
        replace_conv2d_with_lora(nn.Sequential(nn.Linear(3, 3)), 2, 2)
    with pytest.raises(ValueError, match="check target"):
        replace_conv2d_with_lora(net(), 2, 2, target=["nothing.matches"])
    with pytest.raises(ValueError, match="'all' or a list of name patterns"):
        replace_conv2d_with_lora(net(), 2, 2, target="attention")


def test_wrapping_twice_does_not_nest_and_conflicts_change_nothing():
    model = replace_conv2d_with_lora(net(), 2, 4)
    replace_conv2d_with_lora(model, 2, 4)
    assert sorted(lora_layers(model)) == CONVS
    assert not any(isinstance(m.conv, Conv2dWithLoRA) for m in lora_layers(model).values())
    with pytest.raises(ValueError, match="already wrapped with rank=2"):
        replace_conv2d_with_lora(model, 4, 4)


def test_dropout_only_on_lora_path():
    torch.manual_seed(0)
    w = Conv2dWithLoRA(nn.Conv2d(3, 4, 3), 2, 2, dropout=0.5).train()
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(w(x), w.conv(x))
    with torch.no_grad():
        w.lora.B.normal_()
    assert not torch.allclose(w(x), w(x))
    w.eval()
    assert torch.equal(w(x), w(x))


# --- merging, freezing ----------------------------------------------------------------------------------------
def test_merge_unmerge_equal_outputs_exact_and_idempotent():
    model = replace_conv2d_with_lora(net(), 3, 6).eval()
    _trained_like(model, 3)
    x = x_batch()
    y = model(x)
    w0 = model.features[0].conv.weight.clone()
    merge_lora(model)
    w_merged = model.features[0].conv.weight.clone()
    assert not torch.allclose(w_merged, w0)
    torch.testing.assert_close(model(x), y, atol=1e-5, rtol=1e-5)
    merge_lora(model)
    assert torch.equal(model.features[0].conv.weight, w_merged)
    unmerge_lora(model)
    unmerge_lora(model)
    assert torch.allclose(model.features[0].conv.weight, w0, atol=1e-6)
    torch.testing.assert_close(model(x), y, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_unmerge_gives_the_weight_back_bit_for_bit(dtype):
    w = Conv2dWithLoRA(nn.Conv2d(4, 6, 3).to(dtype), 2, 4)
    assert w.lora.A.dtype == dtype
    with torch.no_grad():
        w.lora.B.normal_()
    w0 = w.conv.weight.clone()
    for _ in range(3):
        w.merge()
        w.unmerge()
    assert torch.equal(w.conv.weight, w0)


def test_training_through_a_merged_layer_raises():
    model = replace_conv2d_with_lora(net(), 2, 2)
    mark_only_lora_trainable(model)
    merge_lora(model).train()
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        model(x_batch()).sum().backward()


def test_mark_only_lora_trainable_and_closed_form_count():
    model = replace_conv2d_with_lora(net(), 4, 4)
    mark_only_lora_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{c}.lora.{k}" for c in CONVS for k in "AB"} | {"classifier.weight", "classifier.bias"}
    shapes = [tuple(m.conv.weight.shape) for m in lora_layers(model).values()]
    formula = conv_lora_parameter_count(shapes, 4)
    assert formula == 4 * ((3 * 9 + 8) + (8 * 9 + 12) + (12 * 3 + 12) + (12 + 6))
    assert count_parameters(model).trainable == formula + 96 * 3 + 3


# --- adapter files ------------------------------------------------------------------------------------------
def test_save_load_roundtrip_task_switch_and_mixed_linear(tmp_path):
    model = replace_conv2d_with_lora(net(), 2, 4, use_rslora=True)
    replace_linear_with_lora(model, 2, 4, use_rslora=True, exclude=())  # the head too: Linear and Conv2d mixed
    assert len(lora_layers(model)) == 5
    x = x_batch()
    _trained_like(model, 1)
    y1 = model(x)
    save_adapter(model, tmp_path / "t1", extra=())
    _trained_like(model, 2)
    y2 = model(x)
    save_adapter(model, tmp_path / "t2", extra=())
    fresh = net()  # the same base weights, no LoRA yet: loading wraps the right layers with the right class
    load_adapter(fresh, tmp_path / "t1")
    assert isinstance(fresh.features[0], Conv2dWithLoRA) and fresh.features[0].lora.use_rslora
    assert sorted(lora_layers(fresh)) == sorted(lora_layers(model))
    torch.testing.assert_close(fresh(x), y1)
    load_adapter(fresh, tmp_path / "t2")  # switch tasks on the same wrapped model
    torch.testing.assert_close(fresh(x), y2)
    load_adapter(fresh, tmp_path / "t1")
    torch.testing.assert_close(fresh(x), y1)


def test_adapter_for_other_conv_shapes_is_refused_and_changes_nothing(tmp_path):
    model = replace_conv2d_with_lora(net(), 2, 4)
    _trained_like(model, 1)
    save_adapter(model, tmp_path / "a", extra=())
    other = nn.Module()
    other.features = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1),
                                   nn.ReLU(), nn.Conv2d(12, 12, (3, 1), padding="same"), nn.ReLU(),
                                   nn.Conv2d(12, 6, 1, bias=False))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    shapes = r"features.0.lora.A: adapter \(2, 3, 3, 3\) vs model \(2, 3, 5, 5\)"
    with pytest.raises(AdapterMismatchError, match=shapes):
        load_adapter(other, tmp_path / "a")
    assert not lora_layers(other)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())


def test_mixed_ranks_cannot_be_saved(tmp_path):
    model = replace_conv2d_with_lora(net(), 2, 4)
    replace_linear_with_lora(model, 3, 4, exclude=())
    with pytest.raises(ValueError, match="one rank, alpha"):
        save_adapter(model, tmp_path / "a", extra=())


# --- notebook 9's helpers and exercise checks -----------------------------------------------------------------
def test_digit_tasks_are_fixed_disjoint_and_sized():
    pytest.importorskip("sklearn")
    from lora_lab.course.vision import digit_tasks

    t = digit_tasks(per_class=20)
    assert list(t) == ["pretrain", "5-9", "rotated", "inverted"]
    assert [len(t[k].x_train) for k in t] == [449, 100, 100, 100]
    assert [len(t[k].x_test) for k in t] == [352, 349, 352, 352]
    for task in t.values():
        assert task.x_train.shape[1:] == (1, 8, 8) and task.x_train.dtype == torch.float32
        assert sorted(task.y_train.unique().tolist()) == [0, 1, 2, 3, 4] and task.num_classes == 5
        assert 0 <= float(task.x_train.min()) and float(task.x_train.max()) <= 1
    assert t["5-9"].label_names == [5, 6, 7, 8, 9]
    # rotated and inverted are the same held-out images as the pre-training test set, transformed
    assert torch.equal(t["rotated"].x_test, torch.rot90(t["pretrain"].x_test, 1, dims=(2, 3)))
    assert torch.equal(t["inverted"].x_test, 1 - t["pretrain"].x_test)
    # no adaptation image was seen in pre-training
    seen = {tuple(x.flatten().tolist()) for x in t["pretrain"].x_train}
    assert not seen & {tuple(x.flatten().tolist()) for x in t["pretrain"].x_test}
    assert torch.equal(digit_tasks(20)["5-9"].x_train, t["5-9"].x_train)  # the split is fixed
    with pytest.raises(ValueError, match="per_class must be an int from 1 to 80"):
        digit_tasks(per_class=0)


def test_make_model_methods_train_what_they_say_and_leave_the_base_alone():
    from lora_lab.course.vision import VISION_METHODS, SmallCNN, make_model

    torch.manual_seed(0)
    base = SmallCNN(5)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    counts = {m: count_parameters(make_model(m, base, 5, rank=4, alpha=8)) for m in VISION_METHODS}
    convs = [(16, 1, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3)]
    head = 256 * 5 + 5
    assert counts["head only"].trainable == head
    assert counts["LoRA"].trainable == conv_lora_parameter_count(convs, 4) + head == 2212 + 1285
    assert counts["full"].trainable == counts["fresh"].trainable == counts["full"].total == 24_581
    lora = make_model("LoRA", base, 5)
    assert sorted(lora_layers(lora)) == ["features.0", "features.2", "features.5"]
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="method must be one of"):
        make_model("lora", base, 5)


def test_run_is_reproducible_and_learns():
    pytest.importorskip("sklearn")
    from lora_lab.course.vision import SmallCNN, digit_tasks, run

    task = digit_tasks(10)["5-9"]
    torch.manual_seed(0)
    base = SmallCNN(5)
    a = run("LoRA", base, task, seed=3, epochs=3)
    b = run("LoRA", base, task, seed=3, epochs=3)
    assert a["test_acc"] == b["test_acc"] and a["trainable"] == 3497
    assert run("fresh", base, task, seed=0, epochs=15)["test_acc"] > 0.5  # chance is 0.2


def test_vision_config_profiles():
    from dataclasses import replace

    from lora_lab.course.vision import vision_config

    assert replace(vision_config("offline"), profile="real") == vision_config("real")
    smoke = vision_config("smoke")
    assert len(smoke.seeds) == 2 and smoke.epochs < vision_config("offline").epochs
    assert (smoke.per_class, smoke.rank, smoke.alpha) == (20, 4, 8)  # what the checked cells print is the same
    with pytest.raises(ValueError, match="profile must be"):
        vision_config("fast")


NOT_ANSWERS = [None, "42", True, [1, 2], float("nan")]


def _verdicts(fn, right, wrong, *args, **kwargs):
    for r in right:
        assert fn(r, *args, **kwargs) is True, f"rejected the right answer {r!r}"
    for w in list(wrong) + NOT_ANSWERS:
        assert fn(w, *args, **kwargs) is False, f"accepted the wrong answer {w!r}"


def test_check_conv_lora_params(capsys):
    from lora_lab.course.vision import check_conv_lora_params

    right = 4 * (32 * 9 + 64)
    _verdicts(check_conv_lora_params, [right, float(right), torch.tensor(right)],
              [4 * (32 + 64), 4 * (32 * 9 + 64 * 9), 64 * 32 * 9, 4 * 32 * 9 * 64, right + 1, 4 * 32 * 9], 32, 64, 3, 4)
    check_conv_lora_params(4 * (32 + 64), 32, 64, 3, 4)
    assert "Linear formula" in capsys.readouterr().out
    hints = {4 * (64 * 9 + 32): "in and out swapped",  # r(o*k*k + i): A's kernel over the out channels
             4 * 32 * 9: "that is A alone", 64 * 4: "that is B alone",
             4 * (32 * 9 + 64 * 9): "B is a 1x1 convolution"}
    for wrong, hint in hints.items():
        assert check_conv_lora_params(wrong, 32, 64, 3, 4) is False
        assert hint in capsys.readouterr().out, (wrong, hint)


def test_check_conv_as_matrix(capsys):
    from lora_lab.course.vision import check_conv_as_matrix

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    W = conv.weight.detach()
    right = W.reshape(32, -1)
    wrong = [right.T, W.permute(0, 2, 3, 1).reshape(32, -1), W.transpose(0, 1).reshape(32, -1), W,
             W.reshape(-1), W.reshape(16, -1), right * 2]
    _verdicts(check_conv_as_matrix, [right, right.numpy(), W.flatten(1)], wrong, conv)
    check_conv_as_matrix(right.T, conv)
    assert "transposed" in capsys.readouterr().out
    check_conv_as_matrix(W.permute(0, 2, 3, 1).reshape(32, -1), conv)
    assert "wrong order" in capsys.readouterr().out


def test_check_conv_as_matrix_says_wrong_order_only_for_the_kernels_own_numbers(capsys):
    from lora_lab.course.vision import check_conv_as_matrix

    torch.manual_seed(0)
    conv, other = nn.Conv2d(16, 32, 3), nn.Conv2d(16, 32, 3)
    W = conv.weight.detach()
    cases = {  # answer -> (what the hint must say, what it must not say)
        W.transpose(0, 1).reshape(32, -1): ("wrong order", "not this conv's numbers"),  # a real scramble
        other.weight.detach().reshape(32, -1): ("not this conv's numbers", "wrong order"),  # another conv's kernel
        W.reshape(32, -1).half(): ("not this conv's numbers", "wrong order"),  # a float16 copy: values rounded
        W.reshape(32, -1) * 2: ("not this conv's numbers", "wrong order"),
        W.reshape(144, 32): ("the shape should be (32, 144)", "transposed"),  # right numbers, not a transpose
        W.reshape(32, -1).T: ("transposed", "wrong order"),
        other.weight.detach().reshape(32, -1).T: ("not this conv's numbers", "transposed"),
    }
    for answer, (say, never) in cases.items():
        assert check_conv_as_matrix(answer, conv) is False
        out = capsys.readouterr().out
        assert say in out and never not in out, (tuple(answer.shape), out)
