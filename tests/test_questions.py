"""Concept questions (lora_lab.course.questions, issue 23 §6): every wrong choice is rejected with its own reason,
the right one accepted; every lesson ends with 2-4 of them, and the solutions answer them all."""
import json
from collections import Counter
from pathlib import Path

import pytest

from lora_lab.course.questions import QUESTIONS, answer, lesson_questions, questions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("key", list(QUESTIONS))
def test_every_wrong_choice_is_rejected_with_its_reason_and_the_right_one_accepted(key, capsys):
    q = QUESTIONS[key]
    for letter in q.choices:
        ok = answer(key, letter.upper() if letter == q.right else letter)  # letters are read case-insensitively
        out = capsys.readouterr().out
        if letter == q.right:
            assert ok is True and "✅" in out and q.because in out
        else:
            assert ok is False and "❌" in out and q.why[letter] in out and q.because not in out
    assert answer(key, None) is False and "not answered yet" in capsys.readouterr().out
    assert answer(key, "z") is False and "not a choice" in capsys.readouterr().out


def test_the_right_letter_varies_and_every_lesson_has_two_to_four():
    assert len(Counter(q.right for q in QUESTIONS.values())) >= 3
    for lesson in range(1, 11):
        assert 2 <= len(lesson_questions(lesson)) <= 4, lesson
    with pytest.raises(ValueError, match="no concept question"):
        answer("99.1", "a")
    with pytest.raises(ValueError, match="no concept questions"):
        questions(99)


@pytest.mark.parametrize("lesson", range(1, 11))
def test_each_lesson_ends_with_its_questions(lesson):
    path = next(NOTEBOOKS.glob(f"{lesson:02d}_*.ipynb"))
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    code = ["".join(c["source"]) for c in cells]
    keys = [q.key for q in lesson_questions(lesson)]
    assert f"questions({lesson})" in code[-2]
    assert [f'answer("{key}", None);' in code[-1] for key in keys] == [True] * len(keys)
    # the saved outputs come from these very calls: a renumbered lesson must not keep another lesson's hints
    saved = "".join("".join(o.get("text", "")) for o in cells[-1]["outputs"])
    assert [f"hint: {key}:" in saved for key in keys] == [True] * len(keys)
    shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in cells[-2]["outputs"])
    assert [f"**{key}**" in shown for key in keys] == [True] * len(keys)


def test_the_solutions_answer_every_question():
    nb = json.loads((NOTEBOOKS / "solutions.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "answer(key, q.right)" in "".join(c["source"]))
    text = "".join("".join(o.get("text", "")) for o in cell["outputs"])
    assert all(f"✅ {key} ({q.right})" in text for key, q in QUESTIONS.items())
