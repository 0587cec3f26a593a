"""``python -m lora_lab.student``: the student edition, and the course's cell tags.
The command lives in :mod:`lora_lab.course.student`."""
from .course.student import main

if __name__ == "__main__":
    main()
