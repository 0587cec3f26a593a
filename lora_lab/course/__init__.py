"""Notebook material; it may use every layer below.

* :mod:`lora_lab.course.exercises` - self-checks for the notebooks' exercises
* :mod:`lora_lab.course.questions` - the concept questions that end every lesson, multiple choice, self-checking
* :mod:`lora_lab.course.vision` - notebook 9's images: 8x8 digits, a small CNN, its training loop
* :mod:`lora_lab.course.lessons` - the lessons, their reading and measured run times, the card atop each notebook
* :mod:`lora_lab.course.student` - the student edition, and the course's cell tags
* :mod:`lora_lab.course.slides` - reveal.js decks of the lessons, served offline
* :mod:`lora_lab.course.widgets` - interactive controls, one module per kind
"""
