"""The step profiler (issue 24 §1): operators are sorted into the kinds the levers act on, and a profile of real
training steps accounts for all of the self CPU time."""
import json

import pytest

from lora_lab.experiments import step_profile
from lora_lab.experiments.profiles import get_settings


@pytest.mark.parametrize("op, kind", [("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::bmm", "matmul"),
                                      ("aten::bernoulli_", "dropout"), ("aten::native_dropout", "dropout"),
                                      ("aten::copy_", "casts"), ("aten::_to_copy", "casts"),
                                      ("aten::_foreach_mul_", "optimizer"), ("aten::layer_norm", "softmax/norm/gelu"),
                                      ("aten::mul", "elementwise"), ("aten::embedding", "other")])
def test_operators_are_sorted_into_kinds(op, kind):
    assert step_profile.kind_of(op) == kind


def test_a_profile_of_real_steps_accounts_for_all_the_time(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert step_profile.main(["--profile", "smoke", "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["steps"] == 2 and res["profile"] == "smoke" and res["mean_step_ms_profiled"] > 0
    assert sum(res["kinds"].values()) == pytest.approx(1, abs=0.01)
    assert res["kinds"]["matmul"] > 0 and res["top_ops"] and "ms per step" in capsys.readouterr().out


def test_too_many_steps_is_named():
    with pytest.raises(ValueError, match="fewer steps"):
        step_profile.profile_steps(get_settings("smoke", quiet=True), steps=100000, warmup=0)
