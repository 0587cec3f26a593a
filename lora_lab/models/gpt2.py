"""GPT-2 in one readable file, with plain ``nn.Linear`` layers so LoRA can find them.

Module names follow OpenAI's / Hugging Face's GPT-2 (``transformer.h.0.attn.c_attn`` ...),
so pretrained weights map onto it by name. One detail: GPT-2's checkpoints store these
projections as ``Conv1D`` weights shaped ``(in, out)``; ``nn.Linear`` wants ``(out, in)``,
so the loader transposes them.

For classification (SMS spam), :meth:`GPT.to_classifier` swaps the LM head for a new,
trainable ``Linear(n_embd, num_classes)`` and :meth:`GPT.classify` reads the output at the
**last non-padding token** of each sequence. With causal attention that position has seen
the whole message and nothing after it, so padding cannot change the prediction.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..data.sms import PAD_TOKEN_ID
from ..utils.files import DataIntegrityError, sha256_of
from .protocol import HFLayout

__all__ = ["GPTConfig", "GPT", "PRESETS", "load_pretrained", "linear_shapes", "config_of",
           "WeightsUnavailableError", "WeightsIntegrityError", "CheckpointMismatchError", "HUB_REPOS"]


@dataclass
class GPTConfig:
    name: str = "gpt2"
    vocab_size: int = 50257  # GPT-2's BPE vocabulary; 50256 is <|endoftext|>, which we also pad with
    block_size: int = 1024  # longest sequence the position embedding knows
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # width of the residual stream ("emb_dim")
    dropout: float = 0.0  # GPT-2 was trained with 0.1; 0 keeps fine-tuning deterministic and simple
    bias: bool = True  # GPT-2 has biases in every Linear and LayerNorm
    layer_norm_eps: float = 1e-5
    # Where the weights came from, filled in by load_pretrained (None for random weights). Not part of
    # the architecture, so not compared: they let metrics files and adapters name the exact base model.
    source: str | None = field(default=None, compare=False)  # "hub openai-community/gpt2" or a local path
    revision: str | None = field(default=None, compare=False)  # the hub commit the file came from
    weights_sha256: str | None = field(default=None, compare=False)  # of the weights file, as loaded

    def __post_init__(self):
        for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GPTConfig.{k} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: attention splits "
                             f"the width into n_head equal heads. Pick n_head among the divisors of {self.n_embd}, "
                             "e.g. GPT-2 uses 768 = 12 x 64.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig("gpt2", n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPTConfig("gpt2-medium", n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": GPTConfig("gpt2-large", n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPTConfig("gpt2-xl", n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # for tests and smoke runs: the real vocabulary (so tiktoken works) but a toy body
    "tiny": GPTConfig("tiny", block_size=256, n_layer=2, n_head=2, n_embd=64),
}
HUB_REPOS = {name: f"openai-community/{name}" for name in PRESETS if name != "tiny"}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:  # GPTConfig checks this too; kept for configs built by hand
            raise ValueError(f"n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}")
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))  # pre-norm residual blocks, as in GPT-2
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.classifier: nn.Linear | None = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _check_inputs(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Turn bad inputs into errors that say what is wrong, instead of an "index out of range in self"
        from deep inside the embedding (or, on a GPU, a device-side assert that ends the session).

        Costs one read of four numbers from the device per call (skipped while torch.compile traces)."""
        if idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"input_ids must be a 2-D tensor of integer token ids (batch, seq), got "
                            f"{tuple(idx.shape)} {idx.dtype}")
        B, T = idx.shape
        if B == 0:
            raise ValueError("input_ids has no rows (a batch of 0 messages): give the model at least one")
        if T == 0:
            raise ValueError("input_ids has no tokens (sequence length 0)")
        if T > self.config.block_size:
            n = self.config.block_size
            raise ValueError(f"sequence of {T} tokens is longer than the model's block_size {n}; truncate the "
                             f"messages to at most {n} tokens: SpamDataset(df, max_length={n}) for a data set, "
                             f"classify_message(..., max_tokens={n}) in the playground, or input_ids[:, :{n}]")
        if lengths is not None:
            if not torch.is_tensor(lengths) or lengths.shape != (B,) or lengths.dtype.is_floating_point:
                raise ValueError(f"lengths must be an integer tensor with one entry per row ({B},), got "
                                 f"{tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__}")
        if torch.compiler.is_compiling():
            return
        stats = [idx.min(), idx.max()] + ([lengths.min().to(idx.device), lengths.max().to(idx.device)]
                                         if lengths is not None else [])
        lo, hi, *lens = torch.stack(stats).tolist()
        V = self.config.vocab_size
        if lo < 0 or hi >= V:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the model's vocabulary (ids 0 to {V - 1}): were the ids made "
                             "by another tokenizer? GPT-2 ids come from lora_lab.data.get_tokenizer()")
        if lens and (lens[0] < 1 or lens[1] > T):
            raise ValueError(f"lengths must be between 1 and the sequence length {T} (each counts a row's real "
                             f"tokens; padding goes on the right), got values from {lens[0]} to {lens[1]}")

    def hidden_states(self, idx: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        """The final (layer-normed) residual stream, ``(batch, seq, n_embd)``."""
        if check:
            self._check_inputs(idx)
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def token_states(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`hidden_states` (the :class:`lora_lab.models.protocol.Classifier` name). Padding is on the right
        and attention is causal, so padding cannot change a real position: ``lengths`` is not needed."""
        return self.hidden_states(idx)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Language model: next-token logits at every position, ``(batch, seq, vocab)``.
        Classifier (after :meth:`to_classifier`): class logits ``(batch, num_classes)`` at each
        row's last real token, see :meth:`classify`."""
        if self.classifier is not None:
            return self.classify(idx, lengths)
        return self.lm_head(self.hidden_states(idx))

    # --- classification -------------------------------------------------------------
    def to_classifier(self, num_classes: int) -> "GPT":
        """Replace the LM head by a new ``Linear(n_embd, num_classes)``, trainable by default."""
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        w = self.transformer.wte.weight
        # on the embedding's device and dtype (the meta device too, for counting parameters without weights)
        self.classifier = nn.Linear(self.config.n_embd, num_classes).to(device=w.device, dtype=w.dtype)
        self.lm_head = None
        return self

    def last_block_prefixes(self) -> list[str]:
        """What ``method="last-block"`` trains: the last block, the final LayerNorm and the head."""
        return [f"transformer.h.{self.config.n_layer - 1}", "transformer.ln_f", "classifier"]

    # --- how it maps onto Hugging Face transformers (lora_lab.lora.interop) -----------------
    def hf_layout(self) -> HFLayout:
        """GPT2ForSequenceClassification (our head is its ``score``) or, without a head, GPT2LMHeadModel; the
        names are the same, and the projection weights are stored transposed there (Conv1D)."""
        if self.classifier is not None:
            return HFLayout("GPT2ForSequenceClassification", "", "classifier", "score", "SEQ_CLS", CONV1D_WEIGHTS)
        return HFLayout("GPT2LMHeadModel", "", None, None, "CAUSAL_LM", CONV1D_WEIGHTS)

    def hf_config(self) -> dict:
        try:
            import transformers  # optional: only the exports need it
        except ImportError as e:
            raise ImportError("exporting to the transformers layout needs transformers: pip install transformers") \
                from e
        c = self.config
        kw = {"num_labels": self.classifier.out_features} if self.classifier is not None else {}
        hf = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                     n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=c.layer_norm_eps,
                                     resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                                     activation_function="gelu_new", pad_token_id=PAD_TOKEN_ID,
                                     architectures=[self.hf_layout().hf_class], **kw)
        return json.loads(hf.to_json_string())

    def hub_id(self) -> str | None:
        """The hub repository the weights came from, or the local folder; None for random weights."""
        name, source = self.config.name, self.config.source
        if name in HUB_REPOS and isinstance(source, str) and source.startswith("hub "):
            return HUB_REPOS[name]
        if isinstance(source, str) and source.startswith("local "):  # the folder load_pretrained read it from
            return str(Path(source.removeprefix("local ")).parent)
        return None

    def classify(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``(batch, num_classes)`` from the output at each sequence's last real token.

        ``lengths[i]`` is the number of real (non-padding) tokens of row ``i``; padding must be
        on the right, and ``1 <= lengths[i] <= seq`` (checked: 0 would silently read the last position,
        which is padding). Without ``lengths`` every row is taken as unpadded.
        """
        if self.classifier is None:
            raise RuntimeError("call model.to_classifier(num_classes) before classify()")
        self._check_inputs(idx, lengths)
        h = self.hidden_states(idx, check=False)
        if lengths is None:
            last = h[:, -1]
        else:
            last = h[torch.arange(h.shape[0], device=h.device), lengths.to(h.device) - 1]
        return self.classifier(last)

    # --- generation -----------------------------------------------------------------
    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens. ``temperature=0`` is greedy (deterministic)."""
        if self.lm_head is None:
            raise RuntimeError("this model is a classifier; generation needs the LM head")
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size:])[:, -1]
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def linear_shapes(cfg: GPTConfig, target="all") -> list[tuple[str, int, int]]:
    """``(name, in_features, out_features)`` of the Linear layers LoRA would wrap, computed from the
    config alone (no weights needed) - the basis of the closed-form parameter count."""
    d = cfg.n_embd
    per_block = {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d), "mlp.c_fc": (d, 4 * d), "mlp.c_proj": (4 * d, d)}
    targets = {"all": list(per_block), "attention": [k for k in per_block if k.startswith("attn")],
               "mlp": [k for k in per_block if k.startswith("mlp")]}
    if target not in targets:
        raise ValueError(f"target must be one of {sorted(targets)} (the Linear layers of every block, only the "
                         f"attention ones, or only the MLP ones), got {target!r}")
    keep = targets[target]
    return [(f"transformer.h.{i}.{k}", *per_block[k]) for i in range(cfg.n_layer) for k in keep]


# --- loading pretrained weights ---------------------------------------------------------
class WeightsUnavailableError(RuntimeError):
    """GPT-2 weights could not be downloaded and are not cached."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model."""


class WeightsIntegrityError(DataIntegrityError):
    """A cached weights file does not have the checksum the hub published for it (a
    :class:`lora_lab.utils.files.DataIntegrityError`, like every other checksum failure)."""


# the weights Hugging Face stores as Conv1D, (in, out): transposed to and from nn.Linear's (out, in) layout
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _config_from_hf(path: Path, name: str) -> GPTConfig:
    """Our config from a Hugging Face ``config.json``; a damaged file is an error that names it."""
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from the model's source") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path} should hold a JSON object with the model's sizes, got {type(hf).__name__}")
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k not in hf]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it is not a GPT-2 config.json (those keys give the model's "
                         "sizes); restore it from the model's source")
    try:
        return GPTConfig(name=name, vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", 1024),
                         n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                         layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def config_of(name_or_path) -> GPTConfig:
    """The config of a preset, or of a local checkpoint folder (read from its config.json), without loading weights."""
    if str(name_or_path) in PRESETS:
        return replace(PRESETS[str(name_or_path)])
    p = Path(name_or_path)
    cfg_file = (p if p.is_dir() else p.parent) / "config.json"
    if cfg_file.is_file():
        return _config_from_hf(cfg_file, name=str(name_or_path))
    if p.stem in PRESETS:
        return replace(PRESETS[p.stem])
    raise FileNotFoundError(f"no config.json for {name_or_path}; it says how many layers and heads the model has")


_HEX64 = re.compile(r"[0-9a-f]{64}")


# Seconds to wait before each new try when the hub cannot be reached and nothing is cached: the hub client's
# own schedule (1 + 2 + 4 + 8 + 8 = 23 s, for a flaky classroom network), here so that a test or an impatient
# user can shorten it: lora_lab.models.gpt2.HUB_RETRY_WAITS_S = (1,).
HUB_RETRY_WAITS_S: tuple[float, ...] = (1, 2, 4, 8, 8)


def _reach_hub(repo: str, endpoint, waits) -> None:
    """Ask the hub for the weights file's metadata (a few hundred bytes), trying again after each of ``waits``
    seconds on a network error, a timeout, 408, 429 or 5xx; any other answer, or the last failure, is raised."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(repo, "model.safetensors", endpoint=endpoint)
    for wait in (*waits, None):
        try:
            get_hf_file_metadata(url, endpoint=endpoint)
            return
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if wait is None or (status is not None and status < 500 and status not in (408, 429)):
                raise
        except Exception:
            if wait is None:
                raise
        time.sleep(wait)


def _fetch(name: str, cache_dir, local_files_only, endpoint) -> tuple[Path, Path, str | None]:
    """Download (or find in the cache) a preset's config and weights. Returns their paths and the hub
    commit they belong to. No revision is pinned: we have no verified commit to pin, so we record the one
    the hub resolved instead. With nothing cached, the hub is first reached within :data:`HUB_RETRY_WAITS_S`."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    repo = HUB_REPOS[name]
    try:
        cached = isinstance(try_to_load_from_cache(repo, "model.safetensors", cache_dir=cache_dir), str)
        if not (cached or local_files_only or constants.HF_HUB_OFFLINE):
            _reach_hub(repo, endpoint, HUB_RETRY_WAITS_S)  # nothing cached: the network must work
        files = [Path(hf_hub_download(repo, f, cache_dir=cache_dir, local_files_only=local_files_only,
                                      endpoint=endpoint)) for f in ("config.json", "model.safetensors")]
    except Exception as e:  # offline, DNS failure, hub down, not cached ...
        raise WeightsUnavailableError(
            f"Could not get the {name} weights: downloading {repo}/model.safetensors from the Hugging Face "
            f"hub failed and no cached copy was found ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Connect to the internet and run again (the file is cached after one download), or pass a local "
            "folder with model.safetensors and config.json instead of the preset name.") from e
    weights = files[1]
    # the hub cache keeps files as snapshots/<commit>/<file>
    revision = weights.parent.name if weights.parent.parent.name == "snapshots" else None
    return files[0], weights, revision


def _check_cached_blob(weights: Path, sha: str) -> None:
    """In the hub's cache a large file is a link to ``blobs/<its sha256>``: compare that name, published by
    the hub, with the sha256 of the bytes we are about to load."""
    real = Path(os.path.realpath(weights))
    if real.parent.name == "blobs" and _HEX64.fullmatch(real.name) and real.name != sha:
        raise WeightsIntegrityError(
            f"the cached weights file {real} is corrupt: its sha256 is {sha}, but the hub published {real.name} "
            f"for it. Delete {real} and run again to download it afresh.")


def load_pretrained(name_or_path: str, *, cache_dir=None, local_files_only: bool = False,
                    endpoint: str | None = None, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> GPT:
    """Load GPT-2 weights into :class:`GPT`.

    ``name_or_path`` is a preset (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``), which
    downloads ``model.safetensors`` from ``openai-community/<name>`` on the Hugging Face hub once
    and caches it; or a local ``.safetensors`` file or a folder in the hub's layout (e.g. written by
    ``transformers``' ``save_pretrained``), which loads offline. A preset name always means the hub:
    a folder called ``gpt2`` in the working directory is not used (a warning says so; pass ``./gpt2``
    to load it).

    ``model.config`` records where the weights came from: ``source``, ``revision`` (the hub commit)
    and ``weights_sha256`` (of the file's bytes). The fine-tuning command writes them into
    ``metrics.json`` and :func:`lora_lab.lora.save_adapter` into the adapter, so a result names the exact
    base model it was made with. A cached hub file whose bytes do not match the checksum the hub
    published raises :class:`WeightsIntegrityError`.
    """
    from safetensors.torch import load_file

    name = str(name_or_path)
    p = Path(name_or_path)
    revision = None
    if name in HUB_REPOS:
        if p.exists():
            warnings.warn(f"{name!r} is a hub preset and also a {'folder' if p.is_dir() else 'file'} in the working "
                          f"directory ({p.resolve()}); loading the preset from the hub ({HUB_REPOS[name]}). To load "
                          f"the local one, pass './{name}'.", UserWarning, stacklevel=2)
        cfg_file, weights, revision = _fetch(name, cache_dir, local_files_only, endpoint)
        cfg = _config_from_hf(cfg_file, name=name)
        source = f"hub {HUB_REPOS[name]}"
    elif p.exists():
        weights = p / "model.safetensors" if p.is_dir() else p
        if not weights.is_file():
            raise FileNotFoundError(f"no model.safetensors in {p}; expected a folder in the Hugging Face layout")
        cfg_file = weights.parent / "config.json"
        if cfg_file.is_file():
            cfg = _config_from_hf(cfg_file, name=name)
        elif p.stem in PRESETS:
            cfg = replace(PRESETS[p.stem])
        else:
            raise FileNotFoundError(f"no config.json beside {weights}; it says how many heads the model has")
        source = f"local {weights.resolve()}"
    else:
        raise ValueError(f"{name_or_path!r} is neither a local file/folder nor one of {sorted(HUB_REPOS)}")

    sha = sha256_of(weights)
    if revision is not None:
        _check_cached_blob(weights, sha)
    cfg = replace(cfg, source=source, revision=revision, weights_sha256=sha)
    sd = load_file(str(weights))
    with torch.device("meta"):
        model = GPT(cfg)
    own = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    mapped = {}
    for k, v in sd.items():
        k = k.removeprefix("transformer.")
        if k.endswith((".attn.bias", ".attn.masked_bias")) or k == "lm_head.weight":
            continue  # causal-mask buffers of old checkpoints; the LM head is tied to wte
        mapped["transformer." + k] = v.t() if k.endswith(CONV1D_WEIGHTS) else v
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    bad = [f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in mapped and mapped[k].shape != own[k].shape]
    if missing or unexpected or bad:
        parts = [f"missing {len(missing)}: {missing[:6]}" if missing else "",
                 f"unexpected {len(unexpected)}: {unexpected[:6]}" if unexpected else "",
                 f"wrong shape {len(bad)}: {bad[:6]}" if bad else ""]
        raise CheckpointMismatchError(f"{weights} does not fit GPT-2 config {asdict(cfg)}: "
                                      + "; ".join(x for x in parts if x))
    model.load_state_dict({k: v.to(dtype) for k, v in mapped.items()}, strict=False, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # re-tie after assign
    return model.to(device)
