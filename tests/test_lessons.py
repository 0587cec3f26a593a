"""The teacher's guide and the card at the top of each lesson (lora_lab.course.lessons): the catalogue matches the
notebooks, the card says what it should in every profile, the committed run times cover every notebook and
agree with the notebooks' own metadata and with TEACHING.md, and a classroom can run from a shared read-only
folder of downloads without writing to it."""
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lora_lab.course import lessons
from lora_lab.course.lessons import LESSONS, lesson, lesson_card, markdown_words, reading_minutes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def times():
    """The committed run times, read by the loader the card uses (the checkout's benchmarks/ folder here)."""
    assert (ROOT / "benchmarks" / "lesson-times.json").is_file(), "run make lesson-times"
    return lessons.lesson_times()


def test_catalogue_is_the_notebooks_with_their_titles():
    assert sorted(les.file for les in LESSONS) == [nb.name for nb in NOTEBOOKS]
    for les in LESSONS:
        head = "".join(json.loads((ROOT / "notebooks" / les.file).read_text())["cells"][0]["source"])
        h1 = re.search(r"^# (.+)$", head, re.M).group(1)
        assert h1 == (f"{les.number} · {les.title}" if les.number else les.title)
    assert lesson(4) is lesson("04") is lesson("04_lora_finetuning") is lesson("04_lora_finetuning.ipynb")
    with pytest.raises(KeyError):
        lesson("10_nothing")


@pytest.mark.parametrize("profile", ["real", "offline", "smoke"])
def test_card_in_each_profile(profile, monkeypatch, capsys, times):
    monkeypatch.setenv("LORA_LAB_PROFILE", profile)
    lesson_card("04_lora_finetuning")
    out = capsys.readouterr().out
    lesson_card("04_lora_finetuning")
    assert capsys.readouterr().out == out  # deterministic
    lines = out.splitlines()
    assert len(lines) <= 6
    assert lines[0] == f"Lesson 4 · Fine-tuning with LoRA  |  profile: {profile}"
    assert "%env LORA_LAB_PROFILE=offline" in out and "before the imports" in out
    rows = {ln.replace("→", "").split()[0]: ln for ln in lines[-3:]}
    assert list(rows) == ["real", "offline", "smoke"]
    assert [ln.lstrip().startswith("→") for ln in rows.values()] == [p == profile for p in rows]
    assert rows["real"].endswith("real    not measured")  # never a GPU figure
    off = times["lessons"]["04_lora_finetuning"]["offline"]
    assert re.search(rf"→? ?offline {re.escape(lessons._fmt_s(off['wall_s']))} \((Intel|AMD) [^)]*, 2 cores", out)


@pytest.mark.parametrize("les", LESSONS, ids=lambda les: les.name)
def test_every_lesson_has_a_short_card(les, capsys, times):
    lesson_card(les.name, profile="offline")
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 6
    assert re.search(r"→ offline [\d.]+ (s|min) \((Intel|AMD) [^)]*, 2 cores", out)  # the machine it was measured on


def test_measure_merges_into_the_file(tmp_path, times):
    """Re-measuring one profile of one lesson keeps every other entry (the smoke runs are minutes)."""
    out = tmp_path / "lesson-times.json"
    out.write_text(json.dumps(times))
    data = lessons.measure(("offline",), only=["01"], out=out, log=lambda *a: None)
    assert data["lessons"]["01_low_rank"]["smoke"] == times["lessons"]["01_low_rank"]["smoke"]
    assert data["lessons"]["01_low_rank"]["offline"] == times["lessons"]["01_low_rank"]["offline"]
    assert list(data["lessons"]) == [les.name for les in LESSONS]
    assert json.loads(out.read_text()) == data


def test_card_reads_the_profile_as_the_notebooks_do(monkeypatch, capsys):
    monkeypatch.delenv("LORA_LAB_PROFILE", raising=False)
    lesson_card(1)
    assert capsys.readouterr().out.splitlines()[0].endswith("profile: real")  # the default
    monkeypatch.setenv("LORA_LAB_PROFILE", "gpu")
    with pytest.raises(ValueError, match="LORA_LAB_PROFILE must be one of"):
        lesson_card(1)


def test_card_without_a_times_file_says_not_measured(monkeypatch, capsys):
    monkeypatch.setattr(lessons, "lesson_times", lambda: {})
    lesson_card("solutions", profile="smoke")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Solutions to the exercises  |  profile: smoke"
    assert out.count("not measured") == 3


def test_reading_time():
    nb = {"cells": [{"cell_type": "markdown", "source": ["# 1 · Title\n", "See [the paper](https://arxiv.org/a_b) "
                                                        "and `x A B`: it's rank-16, α/r."]},
                    {"cell_type": "code", "source": ["these words do not count"]}]}
    # 1 Title See the paper and x A B it's rank-16 α r
    assert markdown_words(nb) == 13
    assert [reading_minutes(w) for w in (0, 1, 200, 201, 2405)] == [1, 1, 1, 2, 13]


def test_times_cover_every_notebook_and_never_a_gpu(times):
    assert set(times["lessons"]) == {nb.stem for nb in NOTEBOOKS}
    for name, entry in times["lessons"].items():
        assert set(entry) == {"offline", "smoke"}, name  # nothing for real: it was never run
        assert entry["offline"]["wall_s"] > 0 and entry["offline"]["machine"].startswith("CPU: ")
        assert entry["smoke"]["wall_s"] > 0 and {"load1_before", "load1_after"} <= set(entry["smoke"])
    assert times["profiles"]["real"]["how"].startswith("not measured")
    smoke = times["profiles"]["smoke"]
    assert smoke["machine"].startswith("CPU: ") and smoke["commit"] and "load average" in smoke["note"]
    assert "results" not in times  # bench.committed_results() reads only files with a results table


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_offline_times_are_the_notebooks_own_metadata(nb, times):
    """Re-executing a notebook (make execute) changes its metadata: then run make lesson-times."""
    committed = times["lessons"][nb.stem]["offline"]
    assert committed == lessons.offline_times(json.loads(nb.read_text())), "run make lesson-times"


def test_teaching_table_is_generated_from_the_times():
    text = (ROOT / "TEACHING.md").read_text()
    assert lessons.times_table() in text, "TEACHING.md's table is stale: run make lesson-times"
    # plain markdown: the course website includes the file with MyST
    assert "<div" not in text and "<table" not in text and "<!--" not in text


# --- a classroom without good internet: one shared, read-only folder of downloads ------------------------------
def _listing(folder: Path) -> dict:
    """Every path under ``folder`` with its size, mtime and sha256: equal before and after means nothing was
    written, created or deleted (the proof that still holds when we run as root, where chmod stops nothing)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode),
                                           hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
    return out


def _read_only(folder: Path) -> bool:
    """chmod -R a-w; True when that really stops writes for this user (False as root)."""
    for p in [*folder.rglob("*"), folder]:
        p.chmod(stat.S_IMODE(p.lstat().st_mode) & ~0o222)
    try:
        (folder / "probe").write_text("x")
    except PermissionError:
        return True
    (folder / "probe").unlink()
    return False


def _make_writable(folder: Path):
    for p in [folder, *folder.rglob("*")]:
        p.chmod(stat.S_IMODE(p.lstat().st_mode) | 0o200)


@pytest.fixture
def room(tmp_path):
    """A shared folder laid out as TEACHING.md says, filled from this machine's seeded caches."""
    from lora_lab.cache import TIKTOKEN_FILES, tiktoken_cache_dir
    from lora_lab.data import download_sms_spam

    shared = tmp_path / "lora-lab-shared"
    (shared / "data").mkdir(parents=True)
    (shared / "tiktoken").mkdir()
    (shared / "hf" / "hub").mkdir(parents=True)
    shutil.copy(download_sms_spam(progress=False), shared / "data")
    from lora_lab.data import get_tokenizer

    get_tokenizer()  # fills tiktoken's cache if it is not seeded yet (needs_data skips when it cannot)
    for url, _ in TIKTOKEN_FILES.values():
        name = hashlib.sha1(url.encode()).hexdigest()
        shutil.copy(tiktoken_cache_dir() / name, shared / "tiktoken" / name)
    env = {"LORA_LAB_DATA_DIR": str(shared / "data"), "TIKTOKEN_CACHE_DIR": str(shared / "tiktoken"),
           "HF_HUB_CACHE": str(shared / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}
    yield shared, env
    _make_writable(shared)


@pytest.mark.slow
@pytest.mark.needs_data
def test_a_lesson_runs_from_a_read_only_shared_folder(room):
    """Notebook 3 (data, tokenizer, GPT-2 structure, MiniLM) in the smoke profile, offline, reading the data set
    and tiktoken's files from the shared folder: it succeeds and writes nothing there."""
    pytest.importorskip("nbclient")
    shared, env = room
    enforced = _read_only(shared)
    before = _listing(shared)
    t = lessons.smoke_time(lesson("03"), env=env, timeout=600)
    assert t["wall_s"] > 0
    assert _listing(shared) == before, "the lesson wrote to the shared folder"
    if os.geteuid() != 0:
        assert enforced


@pytest.mark.slow
def test_real_profile_loads_gpt2_from_a_read_only_hub_cache(room, hf_tiny_dir):
    """The real profile's download, done once into the shared hub cache (here a tiny GPT-2 laid out as
    huggingface_hub stores openai-community/gpt2), then read by a learner with HF_HUB_OFFLINE=1: it loads by
    preset name without the network and writes nothing to the folder."""
    shared, env = room
    rev = "0" * 40
    repo = shared / "hf" / "hub" / "models--openai-community--gpt2"
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(hf_tiny_dir / f, repo / "snapshots" / rev / f)
    enforced = _read_only(shared)
    before = _listing(shared)
    code = "from lora_lab.models.gpt2 import load_pretrained; m = load_pretrained('gpt2'); print(m.config.n_embd)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "64"
    assert _listing(shared) == before
    if os.geteuid() != 0:
        assert enforced
