"""The real profile's way to GPT-2, end to end, against a stand-in hub (issue 25 §1).

The Hugging Face hub cannot be reached from CI, so ``tests/hubserver.py`` serves a 124M-shaped GPT-2 with RANDOM
weights (written by transformers' ``save_pretrained``) as ``openai-community/gpt2`` at a fixed commit, from
127.0.0.1. The code under test is the real one: ``load_pretrained`` -> ``huggingface_hub.hf_hub_download`` over
HTTP -> the hub cache -> lora_lab's checksum checks; only the server is local. Each test gets a fresh, empty HF
cache. Measured on 2 cores: about 45 s for the file without the slow test (8 s of it building, saving and hashing
the 498 MB model once per session; each test that downloads it 2-4 s), and 25 s more for the slow one, which
starts Python afresh to show that HF_ENDPOINT set before the import is enough (what CI's real-profile runs use).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hubserver import StandInHub

from lora_lab.models.gpt2 import WeightsIntegrityError, WeightsUnavailableError, load_pretrained

REPO = "openai-community/gpt2"
COMMIT = "5e7a1d2c3b4a59687766554433221100ffeeddcc"  # the stand-in's one commit (40 hex, like a git sha1)


@pytest.fixture(scope="session")
def gpt2_repo(tmp_path_factory):
    """The served folder, transformers' model on the same weights (eval), and the stand-in hub (not started)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()  # GPT-2 124M's shape, random weights
    folder = tmp_path_factory.mktemp("hub") / "gpt2"
    model.save_pretrained(folder, safe_serialization=True)
    yield folder, model, StandInHub({REPO: (folder, COMMIT)})
    shutil.rmtree(folder, ignore_errors=True)  # 498 MB that pytest would otherwise keep for three sessions


@pytest.fixture
def hub(gpt2_repo):
    """The stand-in hub, started for one test (faults and the request log start empty), stopped after it."""
    stand_in = gpt2_repo[2]
    stand_in.reset()
    with stand_in:
        yield stand_in


@pytest.fixture
def cache(tmp_path):
    """A fresh, empty hub cache; removed afterwards (each download puts 498 MB in it)."""
    path = tmp_path / "hf-cache"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hub_env(hub, cache, monkeypatch):
    """Point code that names no endpoint or cache (finetune, settings.load_gpt2) at the stand-in, as
    ``HF_ENDPOINT``/``HF_HUB_CACHE`` do. huggingface_hub reads those variables once, at import, into
    ``huggingface_hub.constants``, so in this process the constants are patched; the variables are set too,
    for child processes."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return hub


@pytest.fixture
def no_waits(monkeypatch):
    """load_pretrained's retry schedule shrunk to three tries, the sleeps recorded instead of slept."""
    waits = []
    monkeypatch.setattr("lora_lab.models.gpt2.HUB_RETRY_WAITS_S", (0.5, 2))
    monkeypatch.setattr("lora_lab.models.gpt2.time.sleep", waits.append)
    return waits


def _served(hub, name="model.safetensors"):
    return hub.repos[REPO][1][name]


def _load(hub, cache, **kw):
    return load_pretrained("gpt2", cache_dir=cache, endpoint=hub.url, **kw)


def _cache_files(cache):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() or p.is_symlink())


def test_stand_in_speaks_the_hub_protocol(hub):
    """What get_hf_file_metadata reads from the real hub, it reads from the stand-in: the commit, the sha256 of the
    LFS file (not the git sha1), its size, and a CDN location on another origin."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=hub.url), endpoint=hub.url)
    served = _served(hub)
    assert (meta.commit_hash, meta.etag, meta.size) == (COMMIT, served.sha256, served.size)
    assert meta.location.startswith(f"http://localhost:{hub.port}/cdn-lfs/")
    cfg = get_hf_file_metadata(hf_hub_url(REPO, "config.json", revision=COMMIT, endpoint=hub.url), endpoint=hub.url)
    assert cfg.etag == _served(hub, "config.json").git_sha1 and cfg.commit_hash == COMMIT


def test_first_download_gives_transformers_logits_and_records_the_commit(hub, cache, gpt2_repo):
    model = _load(hub, cache)
    served = _served(hub)
    assert model.config.source == f"hub {REPO}"
    assert model.config.revision == COMMIT and model.config.weights_sha256 == served.sha256
    assert (model.config.n_layer, model.config.n_embd, model.config.n_head) == (12, 768, 12)
    # the file went over the wire once, from the CDN, and sits in the cache as the hub client lays it out
    assert [r for r in hub.requests if r[0] == "GET" and "cdn-lfs" in r[2]] == [
        ("GET", f"localhost:{hub.port}", f"/cdn-lfs/{served.sha256}", None)]
    repo_dir = cache / "models--openai-community--gpt2"
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert os.path.realpath(repo_dir / "snapshots" / COMMIT / "model.safetensors") == \
        os.path.realpath(repo_dir / "blobs" / served.sha256)
    # the same numbers as transformers' GPT-2 on the same weights
    hf = gpt2_repo[1]
    idx = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx), hf(idx).logits, atol=1e-4, rtol=1e-4)


def test_cache_hit_with_the_network_gone(hub, cache, monkeypatch):
    """Downloaded once, the model loads with the server gone: with HF_HUB_OFFLINE=1, and without it (a classroom
    whose network dropped), from the cache, with the same commit and checksum, and no request made."""
    first = _load(hub, cache).config
    hub.stop()
    hub.requests.clear()
    from huggingface_hub import constants

    for offline in (False, True):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.setenv("HF_HUB_OFFLINE", str(int(offline)))
        again = _load(hub, cache).config
        assert (again.revision, again.weights_sha256) == (COMMIT, first.weights_sha256), offline
    assert hub.requests == []


def test_a_damaged_cached_blob_is_refused_by_name_and_the_advice_works(hub, cache):
    _load(hub, cache)
    blob = cache / "models--openai-community--gpt2" / "blobs" / _served(hub).sha256
    with blob.open("r+b") as f:  # one byte flipped in the middle of the weights, size unchanged
        f.seek(blob.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(WeightsIntegrityError, match="is corrupt") as e:
        _load(hub, cache)
    assert str(blob) in str(e.value) and f"Delete {blob} and run again" in str(e.value)
    blob.unlink()  # what the message says to do
    model = _load(hub, cache)
    assert model.config.weights_sha256 == _served(hub).sha256


def test_bytes_damaged_on_the_way_are_refused_before_use(hub, cache):
    """huggingface_hub checks a plain HTTP download's size, not its sha256: a download damaged on the way (right
    length, wrong bytes) is caught by load_pretrained's own check against the hub's published sha256."""
    hub.fault("corrupt", method="GET", path_contains="cdn-lfs")
    with pytest.raises(WeightsIntegrityError, match=f"the hub published {_served(hub).sha256}"):
        _load(hub, cache)


def test_500_then_200_is_tried_again(hub, cache, no_waits):
    hub.fault("status", status=500, times=2, method="HEAD")
    model = _load(hub, cache)
    assert model.config.revision == COMMIT
    assert no_waits == [0.5, 2]  # two failures, two waits, then the third try got through
    heads = [r for r in hub.requests if r[0] == "HEAD" and r[2].endswith("model.safetensors")]
    assert len(heads) == 4  # 3 tries of the reachability check, then hf_hub_download's own


def test_a_hub_that_stays_down_is_a_clear_error_after_the_retry_budget(hub, cache, no_waits):
    hub.fault("status", status=503, times=99)
    with pytest.raises(WeightsUnavailableError, match="Connect to the internet") as e:
        _load(hub, cache)
    assert REPO in str(e.value) and "503" in str(e.value)
    assert no_waits == [0.5, 2] and len(hub.requests) == 3
    assert _cache_files(cache) == []


def test_404_names_the_repo_and_the_offline_and_smoke_profiles(cache, no_waits, monkeypatch):
    """A hub without the repo (a mistyped mirror, a repo gone): no retries (404 is not a network hiccup), an
    error naming the repo; in a notebook (settings.load_gpt2, real profile) one naming the other profiles."""
    from huggingface_hub import constants

    from lora_lab.experiments.profiles import get_settings, load_gpt2

    with StandInHub({}) as empty:
        with pytest.raises(WeightsUnavailableError, match="RepositoryNotFoundError") as e:
            load_pretrained("gpt2", cache_dir=cache, endpoint=empty.url)
        assert REPO in str(e.value) and no_waits == []
        monkeypatch.setattr(constants, "ENDPOINT", empty.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            empty.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        with pytest.raises(WeightsUnavailableError) as e:
            load_gpt2(get_settings("real", quiet=True))
    msg = str(e.value)
    assert REPO in msg and "LORA_LAB_PROFILE=offline" in msg and "LORA_LAB_PROFILE=smoke" in msg
    assert no_waits == [] and _cache_files(cache) == []


def test_a_cut_connection_is_resumed_to_the_right_file(hub, cache):
    """huggingface_hub resumes a cut download with a Range request, from the bytes it has written (whole 10 MB
    chunks: a partial chunk in its read buffer is lost and fetched again); the joined file is the right one."""
    keep = 25 * 2**20
    hub.fault("truncate", method="GET", path_contains="cdn-lfs", keep=keep)
    model = _load(hub, cache)
    assert model.config.weights_sha256 == _served(hub).sha256
    gets = [r[3] for r in hub.requests if r[0] == "GET" and "cdn-lfs" in r[2]]
    assert len(gets) == 2 and gets[0] is None and gets[1].startswith("bytes=")
    assert 0 < int(gets[1].removeprefix("bytes=").rstrip("-")) <= keep  # resumed, not started over


@pytest.mark.parametrize("how", ["cut", "short"])
def test_a_truncated_download_is_not_left_in_the_cache(hub, cache, how):
    """The connection dropped and the resume refused ("cut"), or a server that ends the body early and says so
    with a shorter Content-Length than the hub's X-Linked-Size ("short"): an error, and nothing in the cache that
    looks like the weights (no blob, no snapshot, no partial file); the next run downloads it whole."""
    served = _served(hub)
    if how == "cut":
        hub.fault("truncate", method="GET", path_contains="cdn-lfs", keep=2**20)
        hub.fault("status", status=500, method="GET", path_contains="cdn-lfs")  # the resume
    else:
        hub.fault("short", method="GET", path_contains="cdn-lfs", keep=2**20)
    with pytest.raises(WeightsUnavailableError, match="no cached copy was found"):
        _load(hub, cache)
    left = [f for f in _cache_files(cache) if not f.startswith(".locks/")]  # (a lock file is named by the sha256)
    assert not [f for f in left if served.sha256 in f or "model.safetensors" in f or f.endswith(".incomplete")], left
    model = _load(hub, cache)
    assert model.config.weights_sha256 == served.sha256


@pytest.mark.needs_data
def test_revision_and_sha256_reach_metrics_json_and_the_adapter(hub_env, cache, tmp_path):
    """The fine-tuning command on the hub's gpt2 (named by preset, no endpoint: HF_ENDPOINT's way) records the
    exact base weights in metrics.json and in the adapter, and load_adapter checks them."""
    from lora_lab.experiments.finetune_job import FinetuneConfig, run
    from lora_lab.lora import load_adapter

    out = tmp_path / "run"
    result = run(FinetuneConfig(model="gpt2", epochs=1, subset=5, batch_size=4, max_length=16, device="cpu",
                                precision="fp32", plot=False, out=str(out)))
    sha = _served(hub_env).sha256
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["base_source"], metrics["base_revision"], metrics["base_weights_sha256"]) == \
        (f"hub {REPO}", COMMIT, sha)
    assert metrics["smoke_numbers_mean_nothing"] is False
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["base_model"], adapter["base_revision"], adapter["base_weights_sha256"]) == ("gpt2", COMMIT, sha)
    # the adapter goes back onto the same base without a word; onto other base weights with a warning
    import dataclasses
    import warnings

    base = load_pretrained("gpt2").to_classifier(2)
    assert base.config.weights_sha256 == sha and result["model"].config.revision == COMMIT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_adapter(base, out / "adapter")
    base.config = dataclasses.replace(base.config, weights_sha256="0" * 64)
    with pytest.warns(UserWarning, match=f"trained on base weights with sha256 {sha} \\(revision {COMMIT}\\)"):
        load_adapter(base, out / "adapter")


@pytest.mark.slow
def test_hf_endpoint_in_a_fresh_process(hub, cache):
    """What CI's real-profile runs rely on: HF_ENDPOINT and HF_HUB_CACHE set before Python starts point the real
    code at the stand-in (huggingface_hub reads them at import), then HF_HUB_OFFLINE=1 works from that cache."""
    code = ("from lora_lab.models.gpt2 import load_pretrained; c = load_pretrained('gpt2').config; "
            "print(c.revision, c.weights_sha256)")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [COMMIT, _served(hub).sha256]
    hub.stop()
    r = subprocess.run([sys.executable, "-c", code], env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [COMMIT, _served(hub).sha256]


def test_the_served_file_is_what_transformers_wrote(gpt2_repo, hub):
    """The stand-in's published sha256 is the file's: the other tests' checks rest on it."""
    folder = gpt2_repo[0]
    assert _served(hub).sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert Path(folder / "config.json").is_file() and _served(hub).size > 490e6
