import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

os.environ.setdefault("LORA_LAB_PROGRESS", "0")  # no progress bars in test logs


def pytest_sessionstart(session):
    # Offline machines (CI): pre-seed the dataset and tiktoken caches from ../shared/data, verified.
    if SHARED.is_dir():
        from lora_lab.cache import seed

        seed(SHARED)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_cfg():
    from lora_lab.gpt2 import PRESETS
    return PRESETS["tiny"]


@pytest.fixture
def tiny_model(tiny_cfg):
    from lora_lab.gpt2 import GPT
    torch.manual_seed(0)
    return GPT(tiny_cfg).eval()


@pytest.fixture(scope="session")
def hf_tiny_dir(tmp_path_factory):
    """A tiny random transformers GPT2LMHeadModel written with save_pretrained (the hub's layout)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("hf_tiny_gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return path
