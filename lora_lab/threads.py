"""``python -m lora_lab.threads``: how a busy machine slows training, measured.
The command lives in :mod:`lora_lab.experiments.contention`."""
from .experiments.contention import main

if __name__ == "__main__":
    main()
