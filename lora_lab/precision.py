"""``python -m lora_lab.precision``: does bf16 change the result? a paired comparison with fp32.
The command lives in :mod:`lora_lab.experiments.bf16_quality`."""
from .experiments.bf16_quality import main

if __name__ == "__main__":
    main()
