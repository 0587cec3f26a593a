"""lora_lab.experiments.results: the results file every sweep grows one run at a time."""
import json

import pytest

from lora_lab.experiments.results import ResultsFile


def test_a_second_launch_resumes_and_says_it_ran(tmp_path):
    path = tmp_path / "r.json"
    first = ResultsFile(path, {"what": "demo"}, key=lambda r: r["seed"])
    first.record_launch("first")
    first.add({"seed": 1, "acc": 0.9})
    again = ResultsFile(path, {"what": "ignored: the file exists"}, key=lambda r: r["seed"])
    assert again.data["what"] == "demo" and again.done() == {1}
    again.record_launch("second")
    again.add({"seed": 2, "acc": 0.8})
    on_disk = json.loads(path.read_text())
    assert [r["seed"] for r in on_disk["runs"]] == [1, 2]
    assert [la["command"] for la in on_disk["launches"]] == ["first", "second"]
    assert on_disk["launches"][0]["machine"] and on_disk["updated"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # nothing half-written left beside it


def test_an_incomparable_file_is_refused_before_any_run(tmp_path):
    path = tmp_path / "r.json"
    ResultsFile(path, {"lr": 1e-3}, key=lambda r: r["seed"]).save()

    def same_lr(data):
        if data["lr"] != 5e-4:
            raise ValueError("made with another learning rate")

    with pytest.raises(ValueError, match="another learning rate"):
        ResultsFile(path, {"lr": 5e-4}, key=lambda r: r["seed"], check=same_lr)
