"""Two tasks on the same messages, one LoRA adapter each on one frozen base (lessons 6 and 7).

Task A is spam detection. Task B asks something else of the same messages: *is it a question?* A message counts
as a question if it contains ``?``, and every ``?`` is then deleted, so a model has to read the wording ("are you",
"what time") instead of spotting the character. The labels come from punctuation, so they are noisy: a question
typed without ``?`` counts as "no question".

Lesson 6 trains the two adapters and compares them; lesson 7 serves them. Both call :func:`train_task_adapters`,
which takes the same steps in the same order (one base and one starting head for both tasks, then each task's
LoRA and training run), so with the same seed on the same machine lesson 7 starts from lesson 6's adapters
instead of depending on files another notebook left behind.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data import balanced_split, load_sms_spam, spam_splits
from ..lora import save_adapter
from ..train.loop import train_classifier
from ..train.methods import apply_method
from ..utils.machine import set_seed, timed

__all__ = ["QUESTION_LABELS", "PER_CLASS", "question_messages", "question_splits", "task_loaders",
           "train_task_adapters"]

QUESTION_LABELS = {"no question": 0, "question": 1}
PER_CLASS = 747  # as many messages per class as the spam task has spam, so both tasks train on 1,045 messages


def question_messages(msgs: pd.DataFrame) -> pd.DataFrame:
    """The collection relabelled for the question task: ``question`` where the text has a ``?``, and every ``?``
    removed from the text (else the task would be spotting one character)."""
    has_q = msgs.text.str.contains("?", regex=False)
    return msgs.assign(label=has_q.map({True: "question", False: "no question"}),
                       text=msgs.text.str.replace("?", "", regex=False))


def question_splits(seed: int = 123, per_class: int | None = None, msgs: pd.DataFrame | None = None):
    """The question task's balanced (train, validation, test) split, made like the spam task's
    (:func:`lora_lab.data.balanced_split`, ``PER_CLASS`` messages per class unless ``per_class`` asks fewer)."""
    msgs = load_sms_spam() if msgs is None else msgs
    return balanced_split(question_messages(msgs), seed=seed, per_class=per_class or PER_CLASS,
                          labels=QUESTION_LABELS)


def task_loaders(bb, settings, msgs: pd.DataFrame | None = None) -> dict:
    """Each task's (training dataset, validation loader, test loader) for a backbone, with the profile's seed and
    batch size; the smoke profile keeps its small subset (``settings.subset``)."""
    def data(splits):
        tr, va, te = bb.datasets(*splits)
        return tr, bb.loader(va, settings.batch_size), bb.loader(te, settings.batch_size)

    return {"spam": data(spam_splits(seed=settings.seed, per_class=settings.subset)),
            "question": data(question_splits(settings.seed, settings.subset, msgs))}


def train_task_adapters(bb, tasks: dict, settings, device, folder, *, rank: int = 16, alpha: float = 16) -> dict:
    """Train one LoRA adapter per task and save each to ``folder/<task>``; return the base's state dict.

    Both adapters start from the same frozen base and the same random head (the state returned, which the
    lessons use as "no adapter"), then each gets rank-``rank`` LoRA on every Linear layer of the body and trains
    with its own head, lesson 4's loop and learning rate, for the profile's epochs. The order of the random draws
    is fixed (the base, then each task's LoRA in ``tasks``' order), so a seed gives the same adapters every time on
    the same machine.
    """
    set_seed(settings.seed)
    base = bb.classifier(device=device)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    for task, (train_ds, val_loader, _) in tasks.items():
        model = bb.classifier(device=device)
        model.load_state_dict(base_state)  # the same base and the same starting head for every task
        apply_method(model, "lora", rank=rank, alpha=alpha)
        with timed(f"training the {task} adapter ({settings.epochs} epochs)"):
            train_classifier(model, bb.loader(train_ds, settings.batch_size, shuffle=True, seed=settings.seed),
                             val_loader, epochs=settings.epochs, lr=bb.lr["lora"], device=device, log=None)
        save_adapter(model, Path(folder) / task, base_model=bb.name, task=task)
        del model
    return base_state
