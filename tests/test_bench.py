"""The benchmark runs in a seconds-long CPU configuration and produces a well-formed table (no timing asserts)."""
import json
import subprocess
import sys

import pytest

from lora_lab.experiments.bench import build_parser, model_flops_per_step, ratios, summary_table
from lora_lab.models.gpt2 import PRESETS


@pytest.mark.slow
@pytest.mark.needs_data
def test_quick_benchmark_writes_well_formed_results(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "lora_lab.bench", "--quick", "--out", str(out)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ("device", "torch", "date", "commit", "results", "inference"):
        assert key in res
    rows = {(row["shape"], row["method"]): row for row in res["results"]}
    assert set(rows) == {("tiny", "full"), ("tiny", "lora-16")}
    for row in rows.values():
        assert row["step_ms_median"] > 0 and row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0
        assert row["steps"] == 3 and row["batch_size"] == 8
    full, lora = rows[("tiny", "full")], rows[("tiny", "lora-16")]
    assert lora["params_trainable"] < full["params_trainable"] == full["params_total"]
    assert lora["optimizer_state_mb"] < full["optimizer_state_mb"]
    # AdamW keeps two fp32 moments per trainable parameter (plus a scalar step count)
    assert full["optimizer_state_mb"] == pytest.approx(2 * 4 * full["params_trainable"] / 2**20, rel=1e-3)
    assert lora["checkpoint_mb"] < full["checkpoint_mb"] / 50
    assert [v["variant"] for v in res["inference"]] == ["base model", "LoRA r=16 unmerged", "LoRA r=16 merged"]
    table = summary_table(res)
    assert list(table["method"]) == ["full", "lora-16"]
    assert set(ratios(res)["tiny"]) == {"step_time_lora_over_full", "peak_mem_lora_over_full"}
    assert res["device"] and f"{res['device']}, torch {res['torch']}:" in r.stdout  # the table names its machine
    assert res["complete"] is True and res["cpu"]["name"] in res["device"]


def test_flop_model_orders_methods():
    cfg = PRESETS["gpt2"]
    full, lora, last = (model_flops_per_step(cfg, (8, 40), m, 16) for m in ("full", "lora", "last-block"))
    assert last < lora < full
    assert 1.4 < full / lora < 1.5  # weight gradients are a third of full training; LoRA's own matmuls cost a bit
    r1 = model_flops_per_step(cfg, (8, 40), "lora", 1)
    assert full / r1 == pytest.approx(1.5, rel=0.01)


def test_methods_argument_uses_the_one_method_vocabulary(capsys):
    assert build_parser().parse_args(["--methods", "full", "lora-4"]).methods == ["full", "lora-4"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--methods", "lora16"])
    assert "or lora-<rank>" in capsys.readouterr().err


def test_committed_results_spell_precision_one_way():
    """fp32, bf16 or fp16, nothing else (older files also said "bfloat16" and "torch.bfloat16", so runs of one
    precision could be taken for two)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    spelled = {m for f in root.rglob("*.json") for m in re.findall(r'"precision": "([^"]*)"', f.read_text())}
    assert spelled and spelled <= {"fp32", "bf16", "fp16"}, spelled
