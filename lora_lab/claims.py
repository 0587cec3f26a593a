"""``python -m lora_lab.claims``: claims often made about LoRA, put to the test (notebook 10).
The command lives in :mod:`lora_lab.experiments.claims`."""
from .experiments.claims import main

if __name__ == "__main__":
    main()
