"""Concept questions that end every lesson: ``questions(4)`` shows lesson 4's, ``answer("4.1", "a")`` checks one.

Exercises (:mod:`lora_lab.course.exercises`) ask for a number or a matrix; these ask whether the idea behind
them landed, as multiple choice. Every wrong choice is a typical wrong answer, and choosing it prints why it is
wrong (never which choice is right); the right choice prints the reason it is right. The question, its choices,
the answer and the feedback live here only: the notebooks call :func:`questions` and :func:`answer`, and the
solutions notebook answers them all. ``tests/test_questions.py`` checks that every wrong choice is rejected with
its own hint and the right one accepted.
"""
from __future__ import annotations

from dataclasses import dataclass

from .exercises import check

__all__ = ["Question", "QUESTIONS", "questions", "answer", "lesson_questions"]


@dataclass(frozen=True)
class Question:
    key: str  # "<lesson>.<n>"
    text: str
    choices: dict  # letter -> choice
    right: str  # the right letter
    why: dict  # wrong letter -> why it is wrong (a hint that does not give the answer away)
    because: str  # why the right choice is right

    @property
    def lesson(self) -> int:
        return int(self.key.split(".")[0])


def _q(key, text, choices, right, why, because) -> Question:
    """A question as written below, with its choices rotated so that the right letter varies from question to
    question and its place gives nothing away."""
    letters = "abcd"[:len(choices)]
    assert right in letters and set(why) == set(letters) - {right}, key  # every wrong choice has its hint
    lesson, n = map(int, key.split("."))
    shift = (lesson + n) % len(choices)
    moved = {letters[i]: letters[(i + shift) % len(choices)] for i in range(len(choices))}
    rotated = {moved[k]: c for k, c in zip(letters, choices)}
    return Question(key, text, {k: rotated[k] for k in letters}, moved[right],
                    {moved[k]: v for k, v in why.items()}, because)


_ALL = [
    _q("1.1", "A 1000 × 1000 matrix is the sum of 5 outer products `u vᵀ`. What is its rank?",
       ["exactly 5", "at most 5", "at least 5", "1000, as for any square matrix of that size"], "b",
       {"a": "the 5 outer products can share directions: u vᵀ + 2 u vᵀ is a sum of two and has rank 1",
        "c": "each outer product adds at most one new direction to the columns",
        "d": "the rank counts independent columns: write the columns out in terms of the 5 vectors u"},
       "every column is a combination of the 5 vectors u, so the columns span at most 5 directions"),
    _q("1.2", "Which rank-k matrix is closest to A in the Frobenius norm (Eckart–Young)?",
       ["the SVD truncated to the k largest singular values", "the first k columns of A, the rest set to zero",
        "the SVD truncated to the k smallest singular values"], "a",
       {"b": "keeping columns ignores how much of A each direction carries; the error would depend on the order",
        "c": "the squared error of a truncation is the sum of the squares of the singular values it drops"},
       "the error of the truncated SVD is the root of the sum of the dropped singular values squared, the least "
       "any rank-k matrix can reach"),
    _q("1.3", "Gradient descent on inputs from a 6-dimensional subspace (section 5). What is low-rank?",
       ["the trained weight W", "the update ΔW = W_trained − W_start", "both", "neither"], "b",
       {"a": "W started full-rank, and adding a low-rank update to it almost always leaves it full-rank",
        "c": "W started full-rank, and adding a low-rank update to it almost always leaves it full-rank",
        "d": "each gradient is a sum of outer products with the inputs, which span only 6 directions"},
       "each gradient step adds outer products with inputs from the 6-dimensional subspace, so the update stays "
       "in it; W itself keeps its full-rank start"),
    _q("2.1", "Why does LoRA's B start at zero?",
       ["so the wrapped model computes exactly what the pretrained one did before training",
        "so fewer parameters train", "so that A does not need to train", "to make the update low-rank"], "a",
       {"b": "B has the same number of entries whatever their values",
        "c": "A and B both train (B's gradient is not zero, even at B = 0)",
        "d": "A B has rank at most r whatever the values: the shapes make it low-rank"},
       "x A B is zero at the start, so training starts from the pretrained model's exact outputs"),
    _q("2.2", "With the α/r rule and α = 16, the rank goes from 8 to 16. The scaling goes from 2 to:",
       ["1", "4", "2 (α does not change)", "√2"], "a",
       {"b": "the rank divides α: a larger rank gives a smaller factor",
        "c": "the factor is α divided by the rank, and the rank changed",
        "d": "that would be rsLoRA's α/√r: 16/√16 = 4, 16/√8 ≈ 5.66"},
       "16 / 16 = 1: under α/r a larger rank multiplies the update by a smaller factor"),
    _q("2.3", "Why does LoRA need far less AdamW state than full fine-tuning?",
       ["AdamW keeps two numbers per trainable parameter, and LoRA trains few",
        "LoRA keeps its optimizer state in bf16", "frozen weights have state too, but it is never updated"], "a",
       {"b": "the state is in fp32 in both cases here: count the numbers, not their width",
        "c": "an optimizer holds state only for the parameters it is given, the trainable ones"},
       "the state is two moments per trainable parameter: 2,360,834 trainable instead of 124 million on GPT-2"),
    _q("3.1", "Why does a GPT-2 classifier read the output at the last real token, not at the last position?",
       ["in a batch, the last position may be padding, and only the last real token has seen the whole message",
        "the last position always holds the end-of-text token", "reading an earlier position is faster"], "a",
       {"b": "only the longest message of a batch fills it; the others end earlier, and what follows them is padding",
        "c": "the model computes every position either way"},
       "causal attention lets a position see only what is before it: the last real token is the one that has "
       "read the whole message, and padding after it cannot change it"),
    _q("3.2", "The collection has 747 spam and 4,827 ham messages. How does the course's split balance them?",
       ["it keeps every spam and draws as many ham at random", "it copies each spam message 6 times",
        "it weights the loss of the spam messages"], "a",
       {"b": "copies would put the same message in training and test; count the split's sizes in notebook 3",
        "c": "the loss is plain cross-entropy; count the split's sizes in notebook 3"},
       "2 × 747 = 1,494 messages, split 70/10/20: most ham is left out (the textbook's choice)"),
    _q("3.3", "Padding each batch only to its own longest message changes:",
       ["the time per epoch, not the predictions (beyond rounding)", "the predictions",
        "the number of training messages"], "a",
       {"b": "padding is masked (MiniLM) or comes after the token read (GPT-2): it never reaches the output",
        "c": "every message is still in a batch; only the padding around it changes"},
       "fewer padded positions to compute, and padding never reaches the output"),
    _q("4.1", "What trains in notebook 4's LoRA classifier?",
       ["A and B in every wrapped layer, and the new head", "only A and B", "A and B and the last block",
        "every weight"], "a",
       {"b": "the head is new and random: it has to train (mark_only_lora_trainable's extra=['classifier'])",
        "c": "the last block is the textbook's other baseline, notebook 5",
        "d": "that is full fine-tuning: count_parameters printed 2.860%"},
       "LoRA's A and B and the head: 664,322 of 23,229,698 parameters on MiniLM"),
    _q("4.2", "The same settings gave 96.3% with seed 124 and 98.0% with seed 125. Setting X beats setting Y by one "
              "point, one seed each. What can you conclude?",
       ["nothing yet: run both on the same several seeds and compare them paired",
        "X is one point better", "the seed does not matter on the test set"], "a",
       {"b": "the seed alone moved the accuracy by 1.67 points (5 test messages) here",
        "c": "the seed changes the head's start and the batch order, and so the test accuracy"},
       "one seed each gives no interval at all: only the same settings on paired seeds can decide"),
    _q("4.3", "What is in a LoRA adapter file?",
       ["A and B of every wrapped layer and the trained head", "the whole fine-tuned model",
        "only the configuration (rank, α, layers)"], "a",
       {"b": "the frozen weights are the pretrained model's: anyone can download them",
        "c": "the configuration alone cannot rebuild what training learned"},
       "only what training changed: 2.54 MiB against the 88.61 MiB model"),
    _q("5.1", "Where does LoRA save memory in a training step?",
       ["gradients and optimizer state", "the weights", "the activations", "all four"], "a",
       {"b": "the frozen weights are all still there, plus A and B",
        "c": "the backward pass still runs through every frozen layer above the first adapter",
        "d": "look at the stacked bars: two of the four did not shrink"},
       "only trainable parameters have gradients and AdamW state, and LoRA trains few"),
    _q("5.2", "Full minus LoRA: +0.73 points on average over 5 seeds, 95% interval +0.05 to +1.41. The verdict:",
       ["full fine-tuning is better", "undecided", "the two are equivalent"], "a",
       {"b": "the whole 95% interval lies above zero: five seeds do decide this one",
        "c": "equivalent needs the whole interval within ± one test message (0.33 points); it reaches +1.41"},
       "the interval excludes zero, so the paired rule decides for full fine-tuning, by a small margin"),
    _q("5.3", "The top 16 singular values of full fine-tuning's ΔW hold a median 68.2% of its energy, a random "
              "matrix's 14.6%. This shows that ΔW:",
       ["is concentrated in few directions, though not exactly rank 16", "has rank 16", "is as random as noise"],
       "a",
       {"b": "rank 16 would put 100% of the energy in the top 16",
        "c": "a random matrix of the same shape puts far less in its top 16"},
       "far more than chance lies in a few directions, yet 16 of them do not hold all of it"),
    _q("6.1", "Merging an adapter, W ← W + scaling · (A B)ᵀ, changes the predictions by:",
       ["nothing beyond rounding", "making them better", "removing the adapter's effect"], "a",
       {"b": "merging computes the same function, only with one matrix instead of two paths",
        "c": "the adapter's update is now inside W: it still acts"},
       "x (W + ΔW)ᵀ = x Wᵀ + x ΔWᵀ: the same outputs, without the extra matrix products at inference"),
    _q("6.2", "One base model, two tasks. Switching from one task's adapter to the other costs:",
       ["loading a file of a few MiB; the base stays in memory", "loading the whole model again",
        "training again"], "a",
       {"b": "the base is frozen and shared: only A, B and the head differ between tasks",
        "c": "both adapters are trained already"},
       "only A, B and the head change: notebook 6 measured the switch in milliseconds"),
    _q("7.1", "Why does LoRA send less between GPUs in data-parallel training?",
       ["only the trainable parameters' gradients are averaged across GPUs", "its activations are smaller",
        "it splits the model across the GPUs"], "a",
       {"b": "activations stay on their GPU, and notebook 5 showed LoRA's are as large as full's",
        "c": "data parallelism copies the whole model to every GPU"},
       "each step all-reduces one gradient per trainable parameter: 9 MiB instead of 475 MiB on GPT-2 124M"),
    _q("7.2", "One batch mixes requests for two adapters and the bare base. What runs once for the whole batch?",
       ["every frozen layer; each row then adds only its own adapter's low-rank path",
        "nothing: each row runs its own copy of the model", "the adapters: every row goes through every A and B"],
       "a",
       {"b": "the base is frozen and shared: one copy, one pass through its layers for all the rows",
        "c": "each row gets only its own adapter's A and B (the base rows none), grouped by adapter"},
       "y = W x + b + s_k x A_k B_k: W x for all rows at once, A_k B_k only on adapter k's rows"),
    _q("7.3", "PEFT stores LoRA's A as the weight of nn.Linear(in, r). For lora_lab's A, shaped (in, r), "
              "PEFT's lora_A.weight is:",
       ["A transposed, (r, in)", "A as it is, (in, r)", "A @ B"], "a",
       {"b": "nn.Linear(in, r) keeps its weight as (out, in) = (r, in)",
        "c": "lora_A holds A alone; B is lora_B"},
       "nn.Linear stores (out, in), so the same numbers travel transposed: lora_A.weight = A.T, lora_B.weight = B.T"),
    _q("8.1", "At rank 64 with α = 16, which rule multiplies the update by the most?",
       ["raw α", "rsLoRA α/√r", "α/r"], "a",
       {"b": "16/√64 = 2: work out the other two rules' factors at rank 64",
        "c": "16/64 = 0.25, the smallest of the three"},
       "raw α keeps 16 at every rank, against 2 for rsLoRA and 0.25 for α/r"),
    _q("8.2", "You trained several ranks. Which numbers choose the rank?",
       ["validation accuracy; then read the test set once, for the chosen rank", "test accuracy",
        "training loss"], "a",
       {"b": "choosing on the test set makes the reported test accuracy optimistic: it is no longer unseen",
        "c": "the training loss rewards memorising, not generalising"},
       "the validation set is there to choose; the test set measures what was chosen"),
    _q("8.3", "From rank 1 to 64 the trainable parameters grew 63×, the training time 1.2×. Why?",
       ["most of the work is the frozen model's forward and backward passes",
        "the LoRA layers run on another core", "larger ranks converge in fewer steps"], "a",
       {"b": "every layer runs on the same cores, one after the other",
        "c": "every run trained the same number of steps (2 epochs)"},
       "the frozen layers' work is the same at every rank; A and B add about 2r/d of a d-wide layer's "
       "multiply-adds, and matrix products are only part of a step's time"),
    _q("9.1", "LoRA on a k×k convolution: why is A a k×k convolution and B a 1×1 one?",
       ["A reads each patch (in·k·k numbers) down to r channels; B mixes those r into out at each position",
        "to save memory only", "because B must start at zero"], "a",
       {"b": "the shapes follow from the matrix view, out × (in·k·k) = (out × r)(r × in·k·k)",
        "c": "B starts at zero whatever its shape"},
       "the kernel is a matrix on patches: its factors are a convolution that reads patches and a 1×1 that mixes"),
    _q("9.2", "After merging a convolution's adapter into its kernel, the model:",
       ["predicts the same, with no extra layers at inference", "can no longer be unmerged",
        "still needs the adapter file to run"], "a",
       {"b": "unmerge_lora subtracts the same update again",
        "c": "the update is inside the kernel now"},
       "merging adds scaling · (B A) to the kernel: the same outputs from one convolution"),
    _q("10.1", "Over three seeds, the 95% interval of the paired differences between LoRA's and full fine-tuning's "
              "train-test gaps includes zero. The claim 'LoRA overfits less' is:",
       ["not shown by this experiment", "supported", "refuted: the two overfit equally"], "a",
       {"b": "an interval that includes zero does not support a difference in either direction",
        "c": "undecided is not equal: more seeds might separate them"},
       "the seeds cannot decide: the claim is neither supported nor refuted here"),
    _q("10.2", "Why compare the subspace similarity φ of two LoRA matrices with its chance level?",
       ["random subspaces overlap too, more as their dimension grows: φ means something only above that",
        "φ of random matrices is always 0", "the chance level is always 0.5"], "a",
       {"b": "two random 8-dimensional subspaces of a 384-dimensional space are not orthogonal: φ > 0",
        "c": "the chance level depends on the dimensions (notebook 10 computes it)"},
       "overlap is expected by chance, and grows with the subspaces' dimensions: only φ above it is learned"),
]
QUESTIONS = {q.key: q for q in _ALL}


def lesson_questions(lesson: int) -> list[Question]:
    return [q for q in _ALL if q.lesson == lesson]


def questions(lesson: int):
    """Show a lesson's questions (as Markdown in a notebook, as text elsewhere)."""
    qs = lesson_questions(lesson)
    if not qs:
        raise ValueError(f"lesson {lesson} has no concept questions: use one of "
                         f"{sorted({q.lesson for q in _ALL})}")
    md = "\n\n".join(f"**{q.key}** {q.text}\n\n" + "\n".join(f"- **{k}**: {c}" for k, c in q.choices.items())
                     for q in qs)
    try:
        from IPython.display import Markdown, display

        display(Markdown(md))
    except ImportError:
        print(md)


def answer(key: str, choice) -> bool:
    """Check one concept question: ``choice`` is a letter (``"a"``); ``None`` means not answered yet."""
    if key not in QUESTIONS:
        raise ValueError(f"no concept question {key!r}: use one of {list(QUESTIONS)}")
    q = QUESTIONS[key]
    letters = ", ".join(f'"{k}"' for k in q.choices)
    if choice is None or choice is Ellipsis:
        return check(False, f"{key}: put one of {letters} as your choice", answered=False)
    c = str(choice).strip().lower().strip("()")
    if c not in q.choices:
        return check(False, f"{key}: {choice!r} is not a choice; put one of {letters}")
    if c != q.right:
        return check(False, f"{key} ({c}): {q.why[c]}")
    print(f"✅ {key} ({c}): {q.because}")
    return True
