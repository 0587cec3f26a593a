"""lora_lab: the helper package of the LoRA Lab course.

    from lora_lab import LoRALayer, LinearWithLoRA, replace_linear_with_lora

The folders are layers, lowest first; a module imports only from its own layer or the ones below it
(tests/test_layers.py checks, and that there is no import cycle):

* :mod:`lora_lab.utils` - environment variables, files, the machine, number formats, threads, plots; imports nothing
  of lora_lab
* :mod:`lora_lab.models` and :mod:`lora_lab.data` - the backbones (GPT-2, MiniLM) and the SMS Spam Collection
* :mod:`lora_lab.lora` - the subject: the layer, which layers it wraps, merging, adapter files, PEFT interop
* :mod:`lora_lab.train` - the training loop, the fine-tuning methods, DDP, what a run costs
* :mod:`lora_lab.experiments` - many fine-tunes and their results files: profiles, benchmarks, claims, the
  lessons' sweeps, the paired rule for differences
* :mod:`lora_lab.course` - notebook material: exercises, lessons, student edition, slides, widgets

The commands, ``python -m lora_lab.<command>`` (each but ``cache`` runs a ``main()`` from the layers above;
``finetune`` also under ``torchrun -m``):

* :mod:`lora_lab.finetune` - one fine-tune (:mod:`lora_lab.experiments.finetune_job`)
* :mod:`lora_lab.bench` - speed and memory, full vs LoRA (:mod:`lora_lab.experiments.bench`)
* :mod:`lora_lab.claims` - notebook 10's claims (:mod:`lora_lab.experiments.claims`)
* :mod:`lora_lab.sweeps` - the sweeps notebooks 5 and 8 read (:mod:`lora_lab.experiments.sweeps`)
* :mod:`lora_lab.precision` - does bf16 change the result? (:mod:`lora_lab.experiments.bf16_quality`)
* :mod:`lora_lab.threads` - a busy machine slows training, measured (:mod:`lora_lab.experiments.contention`)
* :mod:`lora_lab.lessons` - the lessons' run times and cards (:mod:`lora_lab.course.lessons`)
* :mod:`lora_lab.student` - the student edition (:mod:`lora_lab.course.student`)
* :mod:`lora_lab.slides` - reveal.js decks (:mod:`lora_lab.course.slides`)
* :mod:`lora_lab.cache` - fill the download caches offline (``python -m lora_lab.cache seed``; its code is here)
"""
from .utils import threads as _threads

_threads.configure()  # before anything loads torch: no tokenizer thread pool; opt-in polite OpenMP waiting (threads)

from .data.sms import balanced_split, load_sms_spam
from .lora.adapter_file import load_adapter, save_adapter
from .lora.layer import LinearWithLoRA, LoRALayer
from .lora.model import (
    count_parameters,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    replace_linear_with_lora,
    unmerge_lora,
)
from .models.gpt2 import GPT, GPTConfig, load_pretrained
from .train.loop import evaluate, train_classifier


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
