"""The lessons' sweeps (lora_lab.experiments.sweeps): a lesson's live run and the file's rows come from the same
code; the file resumes, refuses rows made with other settings, and the lessons read the committed files."""
import json

import pytest

from lora_lab.experiments import sweeps
from lora_lab.experiments.paired import paired
from lora_lab.experiments.profiles import get_settings, load_backbone

TIMING = {"train_s", "tokens_per_s", "load1_before", "load1_after", "hist"}


@pytest.fixture(scope="module")
def smoke():
    s = get_settings("smoke", quiet=True)
    return s, load_backbone(s, verbose=False)


def test_plans_cover_what_the_lessons_claim():
    off = get_settings("offline", quiet=True)
    methods, ranks = sweeps.plan("methods", off), sweeps.plan("ranks", off)
    assert len(methods) == 15 and {p.seed for p in methods} == {123, 124, 125, 126, 127}
    assert len(ranks) == 39 and len({p.key for p in ranks}) == 39
    for r in sweeps.SEEDED_RANKS:  # the ranks that carry notebook 8's conclusions have 3 seeds under each rule
        for rule in sweeps.RULES:
            assert {p.seed for p in ranks if p.rank == r and p.rule == rule} == {123, 124, 125}
    raw = [p for p in ranks if p.rule == "raw α"]
    assert all(p.alpha == 16 * p.rank for p in raw)
    assert sweeps.live_point("methods", off).method == "full"
    assert sweeps.live_point("ranks", off) in ranks
    with pytest.raises(ValueError, match="unknown sweep"):
        sweeps.plan("nope", off)
    lrs = sweeps.plan("lrs", off)  # notebook 5's learning rates: both methods, every rate, the same 3 seeds
    assert len(lrs) == 24 and len({p.key for p in lrs}) == 24
    for m in ("lora", "full"):
        assert {(p.lr, p.seed) for p in lrs if p.method == m} == {(lr, s) for lr in sweeps.LRS for s in (123, 124, 125)}
    assert sweeps.plan("methods", off)[0].key == "lora|r16|a16|α/r|e3|s123"  # no lr in the keys of default-rate runs


def test_a_points_learning_rate_is_the_one_it_trains_with(smoke, tmp_path):
    s, bb = smoke
    point = sweeps.plan("lrs", s)[-1]
    data = sweeps.run_sweep("lrs", s, tmp_path / "l.json", backbone=bb, points=[point], log=None)
    row = data["runs"][0]
    assert row["lr"] == point.lr == 1e-2 and "|lr0.01|" in row["key"] and row["lr"] != bb.lr[point.method]


def test_the_live_row_equals_the_files_row(smoke, tmp_path):
    s, bb = smoke
    point = sweeps.live_point("ranks", s)
    data = sweeps.run_sweep("ranks", s, tmp_path / "r.json", backbone=bb, points=[point], log=None)
    train_ds, val_loader, test_loader = sweeps.sweep_data(bb, s)
    live, result = sweeps.run_point(bb, point, train_ds, val_loader, test_loader)
    stored = data["runs"][0]
    assert {k: v for k, v in live.items() if k not in TIMING} == {k: v for k, v in stored.items() if k not in TIMING}
    assert result["model"] is not None and live["trainable"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is False  # one point of the plan


def test_resume_skips_done_rows_reuses_a_live_row_and_refuses_other_settings(smoke, tmp_path):
    s, bb = smoke
    out = tmp_path / "m.json"
    pts = sweeps.plan("methods", s)
    sweeps.run_sweep("methods", s, out, backbone=bb, points=pts[:1], log=None)
    fake = {"key": pts[1].key, "method": pts[1].method, "seed": pts[1].seed, "test_acc": 0.123}
    data = sweeps.run_sweep("methods", s, out, backbone=bb, points=pts[:2], known={fake["key"]: fake}, log=None)
    assert [r["key"] for r in data["runs"]] == [p.key for p in pts[:2]]
    assert data["runs"][1]["test_acc"] == 0.123 and len(data["launches"]) == 2
    import dataclasses

    with pytest.raises(ValueError, match="other settings"):
        sweeps.run_sweep("methods", dataclasses.replace(s, batch_size=4), out, backbone=bb, points=pts[:1], log=None)


def test_lesson_results_reads_the_committed_file_and_computes_smoke_afresh(smoke, monkeypatch, tmp_path):
    s, bb = smoke
    off = get_settings("offline", quiet=True)
    if sweeps.committed_path("methods", "offline") is None:
        pytest.skip("no committed methods sweep")
    lines = []
    df, data = sweeps.lesson_results("methods", off, log=lines.append, run_all=False)
    assert data["profile"] == "offline" and len(df) == 15 and "made by `python -m lora_lab.sweeps" in lines[0]
    real = get_settings("real", quiet=True)
    df, data = sweeps.lesson_results("methods", real, log=lines.append, run_all=False)
    assert data["profile"] == "offline" and "not gpt2" in lines[1]
    # the committed offline rows carry what notebook 5 compares: every method on every seed
    acc = {m: dict(zip(g.seed, g.test_acc)) for m, g in df.groupby("method")}
    assert paired(acc["full"], acc["lora"], n_test=300).seeds == (123, 124, 125, 126, 127)
    # the smoke profile computes its small sweep afresh, in a temporary file: nothing is left in runs/sweeps/
    monkeypatch.setattr(sweeps, "REPO", tmp_path)
    df, data = sweeps.lesson_results("methods", s, bb, run_all=False, log=lines.append)
    assert data["profile"] == "smoke" and data["complete"] and len(df) == len(sweeps.plan("methods", s))
    assert not list(tmp_path.rglob("*.json"))


def test_committed_sweeps_are_complete_and_match_their_plan():
    for name in sweeps.SWEEPS:
        path = sweeps.committed_path(name, "offline")
        if path is None:
            continue
        data = sweeps.load_sweep(path)
        plan = {p.key for p in sweeps.plan(name, get_settings("offline", quiet=True))}
        assert data["complete"] and {r["key"] for r in data["runs"]} == plan, name
        assert all(r["precision"] for r in data["runs"] if not r["diverged"])


def test_a_file_that_is_not_a_sweep_is_named(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"schema": "lora_lab.claims/1"}')
    with pytest.raises(ValueError, match="not a sweep results file"):
        sweeps.load_sweep(bad)


def test_a_corrupt_sweep_file_is_named_by_the_command_and_left_as_it_was(tmp_path, capsys):
    bad = tmp_path / "ranks.json"
    bad.write_text('{"schema": "lora_lab.sweep/1", "runs": [')  # cut off mid-write
    with pytest.raises(SystemExit, match="ranks.json"):
        sweeps.main(["ranks", "--profile", "smoke", "--out", str(bad), "--max-runs", "1"])
    assert bad.read_text() == '{"schema": "lora_lab.sweep/1", "runs": ['
    with pytest.raises(SystemExit, match="ranks.json"):
        sweeps.main(["ranks", "--profile", "smoke", "--out", str(bad)])
    assert bad.read_text() == '{"schema": "lora_lab.sweep/1", "runs": ['
