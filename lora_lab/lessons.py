"""``python -m lora_lab.lessons``: the lessons' measured run times and the card atop each notebook.
The command lives in :mod:`lora_lab.course.lessons`."""
from .course.lessons import main

if __name__ == "__main__":
    main()
