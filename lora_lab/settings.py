"""Run profiles for the notebooks: ``real`` (default) and ``smoke`` (CI).

    LORA_LAB_PROFILE=smoke jupyter lab      # tiny random GPT-2, small data subset, one epoch

* **real**: GPT-2 124M from the Hugging Face hub, the full balanced data set, the course's epochs.
* **smoke**: a tiny *random* GPT-2, a small subset and one epoch. It checks that every cell runs,
  in seconds, offline. Its numbers mean nothing, and it says so in a banner.

There is no silent fallback: a real run that cannot get the weights stops, and its message
names ``LORA_LAB_PROFILE=smoke``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

__all__ = ["Settings", "get_settings", "SMOKE_BANNER", "load_gpt2", "load_splits"]

SMOKE_BANNER = """\
############################################################################
#  SMOKE RUN: a tiny GPT-2 with RANDOM weights (and, in the notebooks, a   #
#  small data subset and 1 epoch). It only checks that the code runs.      #
#  Its accuracies, losses and timings MEAN NOTHING - they are not results. #
############################################################################"""


@dataclass(frozen=True)
class Settings:
    profile: str = "real"
    model: str = "gpt2"  # a GPT-2 preset or a local folder
    pretrained: bool = True  # False: random weights (smoke)
    subset: int | None = None  # rows per class kept from the collection before splitting (smoke)
    epochs: int = 5
    batch_size: int = 8
    max_length: int | None = None  # truncate messages to this many tokens (None: the longest in the data)
    seed: int = 123
    extra: dict = field(default_factory=dict)

    @property
    def is_smoke(self) -> bool:
        return self.profile == "smoke"

    def describe(self) -> str:
        w = "pretrained" if self.pretrained else "RANDOM"
        data = f"subset of {self.subset} messages per class" if self.subset else "full balanced data"
        return (f"profile={self.profile}: model={self.model} ({w} weights), {data}, epochs={self.epochs}, "
                f"batch_size={self.batch_size}, max_length={self.max_length}, seed={self.seed}")


def get_settings(profile: str | None = None, *, quiet: bool = False, **overrides) -> Settings:
    """Read ``LORA_LAB_PROFILE`` (``real`` by default) and return the settings, printing what they are
    (and a loud banner in the smoke profile). Keyword overrides change single fields, e.g. ``epochs=3``."""
    profile = (profile or os.environ.get("LORA_LAB_PROFILE") or "real").strip().lower()
    if profile == "real":
        s = Settings()
    elif profile == "smoke":
        s = Settings(profile="smoke", model="tiny", pretrained=False, subset=60, epochs=1, max_length=64)
    else:
        raise ValueError(f"LORA_LAB_PROFILE must be 'real' or 'smoke', got {profile!r}")
    s = replace(s, **overrides)
    if not quiet:
        if s.is_smoke:
            print(SMOKE_BANNER)
        print(s.describe())
    return s


def load_gpt2(settings: Settings, device="cpu"):
    """The GPT-2 the settings ask for: pretrained from the hub (real) or a seeded random tiny one (smoke)."""
    import torch

    from .gpt2 import GPT, PRESETS, WeightsUnavailableError, load_pretrained

    if settings.pretrained:
        try:
            return load_pretrained(settings.model, device=device).eval()
        except WeightsUnavailableError as e:
            raise WeightsUnavailableError(
                f"{e}\n\nThis notebook's real profile needs the GPT-2 weights. To run it anyway with a tiny "
                "random model (numbers meaningless), restart the kernel with LORA_LAB_PROFILE=smoke.") from None
    torch.manual_seed(settings.seed)
    return GPT(PRESETS[settings.model]).to(device).eval()


def load_splits(settings: Settings, data_dir=None):
    """(train, val, test) DataFrames: the balanced 70/10/20 split, or its smoke subset."""
    from .data import spam_splits

    return spam_splits(data_dir, seed=settings.seed, per_class=settings.subset)
