"""``python -m lora_lab.slides``: reveal.js decks of the lessons, served offline.
The command lives in :mod:`lora_lab.course.slides`."""
from .course.slides import main

if __name__ == "__main__":
    main()
