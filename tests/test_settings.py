"""Profiles: smoke says loudly that its numbers mean nothing; real never falls back silently."""
import os
import subprocess
import sys

import pytest

from lora_lab.settings import get_settings


def test_smoke_profile_banner(capsys, monkeypatch):
    monkeypatch.setenv("LORA_LAB_PROFILE", "smoke")
    s = get_settings()
    out = capsys.readouterr().out
    assert "MEAN NOTHING" in out and "RANDOM" in out
    assert s.is_smoke and not s.pretrained and s.model == "tiny" and s.epochs == 1


def test_real_profile_defaults(capsys, monkeypatch):
    monkeypatch.delenv("LORA_LAB_PROFILE", raising=False)
    s = get_settings()
    assert s.model == "gpt2" and s.pretrained and s.epochs == 5 and s.subset is None
    assert "MEAN NOTHING" not in capsys.readouterr().out


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="must be 'real' or 'smoke'"):
        get_settings("fast")


def test_real_profile_without_weights_stops_and_names_smoke(tmp_path):
    """The real code path up to the download: with no network and an empty cache it stops, never falls back."""
    code = "from lora_lab.settings import get_settings, load_gpt2; load_gpt2(get_settings('real'))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0
    assert "WeightsUnavailableError" in r.stderr and "LORA_LAB_PROFILE=smoke" in r.stderr
    assert "openai-community/gpt2" in r.stderr
