"""Training, on any classifier.

* :mod:`lora_lab.train.loop` - train_step, train_classifier, evaluate, predict; NaN diagnosis
* :mod:`lora_lab.train.methods` - the fine-tuning methods (full, last-block, lora) and their names
* :mod:`lora_lab.train.distributed` - DistributedDataParallel: set-up, tear-down, bytes all-reduced per step
* :mod:`lora_lab.train.measure` - what a run costs: memory by kind, checkpoint bytes, latency
"""
from .distributed import ddp_comm, setup, teardown
from .loop import NonFiniteLossError, evaluate, make_optimizer, predict, train_classifier, train_step
from .measure import checkpoint_bytes, latency_ms, memory_breakdown
from .methods import DEFAULT_LR, METHODS, MINILM_LR, apply_method, method_name, parse_method

__all__ = ["train_classifier", "evaluate", "predict", "train_step", "make_optimizer", "NonFiniteLossError",
           "METHODS", "DEFAULT_LR", "MINILM_LR", "apply_method", "parse_method", "method_name", "setup",
           "teardown", "ddp_comm", "checkpoint_bytes", "memory_breakdown", "latency_ms"]
