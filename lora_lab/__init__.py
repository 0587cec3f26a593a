"""lora_lab: the helper package of the LoRA Lab course.

    from lora_lab import LoRALayer, LinearWithLoRA, replace_linear_with_lora

Modules, each named after the idea it holds:

* :mod:`lora_lab.lora` - the LoRA layer, wrapping, merging, freezing, counting, adapter files
* :mod:`lora_lab.gpt2` - GPT-2 in one file, pretrained-weight loading, the classifier head
* :mod:`lora_lab.data` - the SMS Spam Collection: download, split, tokenize, batch
* :mod:`lora_lab.train` - training and evaluation loops
* :mod:`lora_lab.settings` - the notebooks' real / smoke profiles
* :mod:`lora_lab.finetune` - ``python -m lora_lab.finetune`` (also under ``torchrun``)
* :mod:`lora_lab.bench` - ``python -m lora_lab.bench``: speed and memory, full vs LoRA
"""
from .data import balanced_split, load_sms_spam
from .gpt2 import GPT, GPTConfig, load_pretrained
from .lora import (LinearWithLoRA, LoRALayer, count_parameters, load_adapter, lora_state_dict, mark_only_lora_trainable,
                   merge_lora, replace_linear_with_lora, save_adapter, unmerge_lora)
from .train import evaluate, train_classifier

__version__ = "0.1.0"
__all__ = ["LoRALayer", "LinearWithLoRA", "replace_linear_with_lora", "merge_lora", "unmerge_lora",
           "mark_only_lora_trainable", "count_parameters", "lora_state_dict", "save_adapter", "load_adapter",
           "GPT", "GPTConfig", "load_pretrained", "load_sms_spam", "balanced_split", "train_classifier", "evaluate"]
