"""lora_lab.utils.machine: the one lookup of the checkout's root and of its commit, which results files record."""
import subprocess
from pathlib import Path

import pytest
import torch

from lora_lab.train.loop import default_progress
from lora_lab.utils import env, machine, threads
from lora_lab.utils.machine import pick_device
from lora_lab.utils.precision import precision_for

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_root_is_the_folder_with_pyproject():
    assert machine.checkout_root() == ROOT


def test_git_commit_names_head_and_says_when_tracked_files_differ(monkeypatch):
    monkeypatch.delenv("LORA_LAB_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    assert machine.git_commit() == head.strip() + ("+uncommitted changes" if dirty else "")


def test_git_commit_taken_from_the_environment_where_there_is_no_git(monkeypatch):
    monkeypatch.setenv("LORA_LAB_COMMIT", "abc1234")
    assert machine.git_commit() == "abc1234"


def test_no_checkout_no_commit(monkeypatch):
    monkeypatch.delenv("LORA_LAB_COMMIT", raising=False)
    monkeypatch.setattr(machine, "checkout_root", lambda: None)
    assert machine.git_commit() is None


def test_committed_file_finds_the_checkouts_file_first(monkeypatch):
    assert machine.committed_file("claims", "claims-offline.json") == ROOT / "benchmarks/claims/claims-offline.json"
    assert machine.committed_file("no-such-file.json") is None
    monkeypatch.setattr(machine, "checkout_root", lambda: None)  # installed from a wheel: only the packaged copy
    found = machine.committed_file("lesson-times.json")
    assert found is None or (found.name == "lesson-times.json" and ROOT / "benchmarks" != found.parent)


@pytest.mark.parametrize("variable, value, call", [
    ("LORA_LAB_PRECISION", "bf17", lambda: precision_for(torch.device("cpu"), "auto")),
    ("LORA_LAB_DEVICE", "gpu", lambda: pick_device()),
    ("LORA_LAB_CPU_BF16", "yes", lambda: env.cpu_bf16()),
    ("LORA_LAB_PROGRESS", "off", lambda: default_progress()),
    ("LORA_LAB_WIDGETS", "true", lambda: env.widgets()),
    ("LORA_LAB_THREADS", "nice", lambda: threads.configure({"LORA_LAB_THREADS": "nice"})),
])
def test_a_garbage_environment_variable_is_an_error_naming_it(monkeypatch, variable, value, call):
    """A typo in a LORA_LAB_* variable is refused by name before any work (it never silently means the
    default, nor fails later with an error about something else)."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}={value!r}"):
        call()


def test_a_data_dir_that_is_a_file_is_refused_by_name(monkeypatch, tmp_path):
    from lora_lab.data import default_data_dir

    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("LORA_LAB_DATA_DIR", str(tmp_path / "f"))
    with pytest.raises(ValueError, match="LORA_LAB_DATA_DIR=.* is a file, not a folder"):
        default_data_dir()
    monkeypatch.setenv("LORA_LAB_DATA_DIR", "~/lora-lab-data")
    assert default_data_dir() == Path.home() / "lora-lab-data"  # ~ expanded
