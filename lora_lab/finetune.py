"""``python -m lora_lab.finetune``: one fine-tune from the command line (also under ``torchrun -m``).
The command lives in :mod:`lora_lab.experiments.finetune_job`."""
from .experiments.finetune_job import main

if __name__ == "__main__":
    main()
