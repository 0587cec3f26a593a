"""lora_lab.utils.machine: the one lookup of the checkout's root and of its commit, which results files record."""
import subprocess
from pathlib import Path

from lora_lab.utils import machine as nbtools

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_root_is_the_folder_with_pyproject():
    assert nbtools.checkout_root() == ROOT


def test_git_commit_names_head_and_says_when_tracked_files_differ(monkeypatch):
    monkeypatch.delenv("LORA_LAB_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    assert nbtools.git_commit() == head.strip() + ("+uncommitted changes" if dirty else "")


def test_git_commit_taken_from_the_environment_where_there_is_no_git(monkeypatch):
    monkeypatch.setenv("LORA_LAB_COMMIT", "abc1234")
    assert nbtools.git_commit() == "abc1234"


def test_no_checkout_no_commit(monkeypatch):
    monkeypatch.delenv("LORA_LAB_COMMIT", raising=False)
    monkeypatch.setattr(nbtools, "checkout_root", lambda: None)
    assert nbtools.git_commit() is None


def test_committed_file_finds_the_checkouts_file_first(monkeypatch):
    assert nbtools.committed_file("claims", "claims-offline.json") == ROOT / "benchmarks/claims/claims-offline.json"
    assert nbtools.committed_file("no-such-file.json") is None
    monkeypatch.setattr(nbtools, "checkout_root", lambda: None)  # installed from a wheel: only the packaged copy
    found = nbtools.committed_file("lesson-times.json")
    assert found is None or (found.name == "lesson-times.json" and ROOT / "benchmarks" != found.parent)
