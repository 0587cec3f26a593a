import os

# Before torch loads OpenMP: waiting threads sleep instead of spinning, so tests (and the notebook kernels
# nbval starts, which inherit this) do not collapse when other processes share the cores. See lora_lab.threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

os.environ.setdefault("LORA_LAB_PROGRESS", "0")  # no progress bars in test logs


def pytest_sessionstart(session):
    # Offline machines (CI): pre-seed the dataset and tiktoken caches from ../shared/data, verified.
    if SHARED.is_dir():
        from lora_lab.cache import seed

        seed(SHARED)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


_DATA_MISSING: list = []  # [reason or None], worked out once, by the first test that needs the data


def _data_missing() -> str | None:
    """Why the SMS Spam Collection or GPT-2's tokenizer files cannot be had here, or None when they can.

    Only "not cached and no network" (an OSError) is a reason to skip; a corrupt file still fails its test."""
    if not _DATA_MISSING:
        from lora_lab.data import download_sms_spam, get_tokenizer

        try:
            download_sms_spam(progress=False)
            get_tokenizer().encode_ordinary("ok")
            _DATA_MISSING.append(None)
        except OSError as e:
            _DATA_MISSING.append(f"needs the SMS Spam Collection and GPT-2's tokenizer files, which are neither "
                                 f"cached nor downloadable here ({type(e).__name__}: {str(e)[:160]}); connect to "
                                 "the internet once, or run python -m lora_lab.cache seed <folder>")
    return _DATA_MISSING[0]


@pytest.hookimpl(tryfirst=True)  # before any fixture reads the data
def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_data") and (reason := _data_missing()):
        pytest.skip(reason)


@pytest.fixture
def tiny_cfg():
    from lora_lab.models.gpt2 import PRESETS
    return PRESETS["tiny"]


@pytest.fixture
def tiny_model(tiny_cfg):
    from lora_lab.models.gpt2 import GPT
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
