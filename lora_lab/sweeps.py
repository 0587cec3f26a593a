"""``python -m lora_lab.sweeps``: the lessons' sweeps (notebooks 5 and 8), recomputed into a results file.
The command lives in :mod:`lora_lab.experiments.sweeps`."""
from .experiments.sweeps import main

if __name__ == "__main__":
    main()
