"""Images for notebook 9: scikit-learn's 8x8 digits, a small CNN, the adaptation tasks and one training loop.

The data set is the one bundled *inside* scikit-learn (1,797 greyscale 8x8 images of the digits 0-9, 16 grey
levels, from UCI's optical-recognition data): nothing is downloaded, so the notebook runs offline and in CI.
Everything here is small on purpose: a whole pre-training, or one fine-tuning, takes a second or two on a
laptop CPU, so the notebook can afford several methods x tasks x seeds.

The story of the notebook: a CNN is pre-trained on the digits 0-4, then adapted, from few examples, to new
tasks (new classes 5-9, the same digits rotated, or inverted), by four methods: the frozen base with a new
head (a linear probe), LoRA on every convolution (plus the head), full fine-tuning, and a fresh model trained
from scratch.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..lora.conv import replace_conv2d_with_lora
from ..lora.model import count_parameters, mark_only_lora_trainable
from .exercises import answered, as_array, check, same_matrix, same_number

__all__ = ["Task", "load_digits_images", "digit_tasks", "SmallCNN", "VISION_METHODS", "VisionConfig", "vision_config",
           "make_model", "train", "accuracy", "run", "check_conv_lora_params", "check_conv_as_matrix", "BATCH_SIZE"]

VISION_METHODS = ("head only", "LoRA", "full", "fresh")
# the learning rate of each method, Adam: the head and LoRA (whose B starts at zero) take larger steps than full
# fine-tuning of pretrained weights; a fresh model is trained like the pre-training
LR = {"head only": 1e-2, "LoRA": 1e-2, "full": 2e-3, "fresh": 3e-3}
BATCH_SIZE = 25  # the mini-batch of every adaptation run (:func:`train`'s default): 100 images, 4 batches an epoch


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): 1,797 images as float32 in [0, 1], shape (N, 1, 8, 8), and their digits 0-9.

    scikit-learn ships them, so this reads a file of the installed package (no network). Without scikit-learn
    it says how to install it."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("notebook 9 uses scikit-learn's bundled digits: pip install scikit-learn "
                          "(or pip install 'lora-lab[lab]'); Colab has it already") from None
    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


@dataclass
class Task:
    """One classification task: tensors for training and testing, and what the labels mean."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    label_names: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def __repr__(self) -> str:
        return (f"Task({self.name!r}: {len(self.x_train)} training / {len(self.x_test)} test images, "
                f"{self.num_classes} classes {self.label_names})")


def digit_tasks(per_class: int = 20, split_seed: int = 0) -> dict[str, Task]:
    """The pre-training task and three adaptation tasks, from one fixed split of the digits.

    Each digit's images are shuffled once (``split_seed``) and cut in two halves. The **pre-training** task
    trains on the first half of the digits 0-4. The adaptation tasks use only the second half: the first
    ``per_class`` images of each class to train (few examples, where adapting a pre-trained model should pay
    off), the rest to test. The pre-training test set is that same held-out rest of the digits 0-4.

    * ``"5-9"``: the digits 5-9 as five **new classes** (labels 0-4 stand for 5-9); never seen in pre-training.
    * ``"rotated"``: the digits 0-4 turned by 90 degrees: known classes, a new view.
    * ``"inverted"``: the digits 0-4 with black and white swapped (``1 - x``): known classes, new contrast.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or not 1 <= per_class <= 80:
        raise ValueError(f"per_class must be an int from 1 to 80 (each digit keeps about 90 images for adapting), "
                         f"got {per_class!r}")
    images, labels = load_digits_images()
    rng = np.random.default_rng(split_seed)
    first, train, test = {}, {}, {}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        half = len(idx) // 2
        first[d], second = idx[:half], idx[half:]
        train[d], test[d] = second[:per_class], second[per_class:]

    def take(parts, digits):
        idx = np.concatenate([parts[d] for d in digits])
        return torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])

    def task(name, digits, transform=lambda x: x, names=None):
        xtr, ytr = take(train, digits)
        xte, yte = take(test, digits)
        shift = min(digits)
        return Task(name, transform(xtr), ytr - shift, transform(xte), yte - shift, names or list(digits))

    rot = lambda x: torch.rot90(x, 1, dims=(2, 3))  # noqa: E731
    pre_x, pre_y = take(first, range(5))
    tasks = {"pretrain": Task("digits 0-4", pre_x, pre_y, *take(test, range(5)), list(range(5))),
             "5-9": task("digits 5-9 (new classes)", range(5, 10)),
             "rotated": task("digits 0-4 rotated 90°", range(5), rot),
             "inverted": task("digits 0-4 inverted", range(5), lambda x: 1 - x)}
    return tasks


class SmallCNN(nn.Module):
    """Three 3x3 convolutions and a linear head, for 1x8x8 images (about 24 k parameters).

    ``features``: conv 1->16, conv 16->32, pool to 4x4, conv 32->64, pool to 2x2; ``classifier``: Linear(256, n).
    The head is called ``classifier`` so that the course's helpers (``mark_only_lora_trainable``,
    ``save_adapter``) train and save it with the LoRA weights, as for the text models."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def make_model(method: str, base: nn.Module, num_classes: int, *, rank: int = 4, alpha: float = 8) -> nn.Module:
    """A model ready to train for ``method`` (one of :data:`VISION_METHODS`), from the pre-trained ``base``
    (not changed).

    Every method gets a new head drawn from the current torch seed, in the same draw order, so a seed gives
    each method the same head start. ``"head only"`` freezes the convolutions (a linear probe on the base's
    features); ``"LoRA"`` wraps every convolution (rank, alpha) and trains A, B and the head; ``"full"`` trains
    everything; ``"fresh"`` ignores the base: a new random model, all trained."""
    if method not in VISION_METHODS:
        raise ValueError(f"method must be one of {VISION_METHODS}, got {method!r}")
    if method == "fresh":
        return SmallCNN(num_classes)
    model = copy.deepcopy(base)
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    if method == "head only":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
    elif method == "LoRA":
        replace_conv2d_with_lora(model, rank, alpha)
        mark_only_lora_trainable(model)
    else:
        model.requires_grad_(True)
    return model


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
          batch_size: int = BATCH_SIZE,
          seed: int = 0) -> float:
    """Adam on the trainable parameters, shuffled mini-batches (order fixed by ``seed``); returns the seconds."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: nothing to train")
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(-1) == y).float().mean())


def run(method: str, base: nn.Module, task: Task, *, seed: int, epochs: int, rank: int = 4,
        alpha: float = 8) -> dict:
    """One adaptation run: seed, build (:func:`make_model`), train, test. Returns the numbers and the model."""
    torch.manual_seed(seed)
    model = make_model(method, base, task.num_classes, rank=rank, alpha=alpha)
    secs = train(model, task.x_train, task.y_train, epochs=epochs, lr=LR[method], seed=seed)
    return {"task": task.name, "method": method, "seed": seed, "test_acc": accuracy(model, task.x_test, task.y_test),
            "train_acc": accuracy(model, task.x_train, task.y_train), "train_s": secs,
            "trainable": count_parameters(model).trainable, "model": model}


@dataclass(frozen=True)
class VisionConfig:
    """How much notebook 9 trains in a profile. The smoke profile (CI) trains less and with two seeds; the
    data, the model and every count are the same in all profiles."""

    profile: str
    pretrain_epochs: int
    epochs: int
    seeds: tuple
    per_class: int = 20
    rank: int = 4
    alpha: float = 8

    def describe(self) -> str:
        return (f"profile={self.profile}: scikit-learn digits 8x8, pre-training {self.pretrain_epochs} epochs, "
                f"adaptation {self.epochs} epochs on {self.per_class} images per class, LoRA rank {self.rank} "
                f"alpha {self.alpha}, seeds={list(self.seeds)}")


def vision_config(profile: str) -> VisionConfig:
    """The :class:`VisionConfig` of a ``lora_lab.experiments.profiles`` profile (``real`` and ``offline`` are the same:
    this notebook needs no GPU and no download)."""
    if profile == "smoke":
        return VisionConfig(profile, pretrain_epochs=4, epochs=10, seeds=(0, 1))
    if profile in ("real", "offline"):
        return VisionConfig(profile, pretrain_epochs=15, epochs=40, seeds=(0, 1, 2))
    raise ValueError(f"profile must be 'real', 'offline' or 'smoke', got {profile!r}")


# --- exercises of notebook 9 ----------------------------------------------------------------------------------
def check_conv_lora_params(answer, in_channels: int, out_channels: int, kernel_size: int, rank: int) -> bool:
    """Parameters LoRA adds to one ``Conv2d(in, out, k)``: A is ``rank x in*k*k`` (a k x k kernel with rank
    output channels), B is ``out x rank`` (a 1x1 convolution)."""
    i, o, k, r = in_channels, out_channels, kernel_size, rank
    expected = r * (i * k * k + o)
    if same_number(answer, expected):
        return check(True, "")
    if same_number(answer, r * (i + o)):
        hint = "that is the Linear formula: A sees a whole k x k patch of every input channel, in*k*k numbers"
    elif same_number(answer, r * (o * k * k + i)):
        hint = ("in and out swapped: A reads the input, so its k x k kernel spans the in channels (rank x in*k*k); "
                "B writes the out channels (out x rank)")
    elif same_number(answer, r * (i * k * k + o * k * k)):
        hint = "B is a 1x1 convolution: it mixes channels pixel by pixel, so it has no k x k kernel"
    elif same_number(answer, o * i * k * k):
        hint = "that is the frozen kernel's size; count A and B"
    elif same_number(answer, r * i * k * k * o):
        hint = "A and B are added to each other's counts, not multiplied"
    elif same_number(answer, r * i * k * k):
        hint = "that is A alone (rank x in*k*k); add B, the 1x1 convolution from rank to out channels (out x rank)"
    elif same_number(answer, r * o):
        hint = "that is B alone (out x rank); add A, the k x k kernel from in channels to rank (rank x in*k*k)"
    else:
        hint = "A: rank x (in*k*k), B: out x rank"
    return check(False, hint, answered=answered(answer))


def check_conv_as_matrix(answer, conv: nn.Conv2d) -> bool:
    """The conv kernel as the matrix that multiplies the unfolded patches: ``(out, in*kh*kw)``."""
    W = conv.weight.detach()
    expected = W.reshape(W.shape[0], -1)
    if same_matrix(answer, expected):
        return check(True, "")
    got = as_array(answer)
    want = as_array(expected)
    # the same numbers in another order (a .T, a permute, a reshape to the wrong shape)? else they are not the kernel's
    same_numbers = (got is not None and got.size == want.size
                    and bool(np.allclose(np.sort(got, axis=None), np.sort(want, axis=None), rtol=1e-5, atol=1e-6)))
    if got is not None and got.shape == want.T.shape and same_matrix(got.T, want):
        hint = "transposed: one row per output channel (filter), one column per number in a patch"
    elif got is not None and got.shape == want.shape and same_numbers:
        hint = ("right shape, wrong order: keep each filter's numbers together in PyTorch's (in, kh, kw) order, "
                "as weight.reshape(out, -1) does (a .T or a permute before reshaping scrambles them)")
    elif same_numbers:
        hint = f"the numbers are there, but the shape should be {tuple(want.shape)}: (out, in*kh*kw)"
    elif got is not None and got.size == want.size:
        hint = (f"right size, but these are not this conv's numbers (another layer's kernel, or a copy whose values "
                f"changed, e.g. rounded to float16?): reshape this conv's weight to {tuple(want.shape)}")
    else:
        hint = "reshape conv.weight, (out, in, kh, kw), to (out, in*kh*kw): one row per filter"
    return check(False, hint, answered=answered(answer))
