"""Utilities every layer may use; nothing here imports the rest of lora_lab, so any module can lean on them.

* :mod:`lora_lab.utils.env` - every ``LORA_LAB_*`` environment variable: what it does, and its one reader
* :mod:`lora_lab.utils.files` - checksums (one error type), all-or-nothing writes, JSON
* :mod:`lora_lab.utils.machine` - naming the machine, timing cells, device, seeds, peak memory, the checkout and its
commit
* :mod:`lora_lab.utils.precision` - which number format to train in on this machine (the bf16 probe), autocast and
grad scaling
* :mod:`lora_lab.utils.threads` - OpenMP and tokenizer threads, set before torch loads (why a busy machine slows
training)
* :mod:`lora_lab.utils.plots` - plots sized for a projector
"""
