"""``python -m lora_lab.bench``: speed and memory, full fine-tuning vs LoRA.
The command lives in :mod:`lora_lab.experiments.bench`."""
from .experiments.bench import main

if __name__ == "__main__":
    main()
