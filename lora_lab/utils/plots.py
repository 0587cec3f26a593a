"""Plots for the course, sized and labelled for a projector."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["style", "plot_history", "plot_confusion", "plot_compare_histories"]


def style() -> None:
    """Large fonts and thick lines: readable from the back of a classroom."""
    plt.rcParams.update({"figure.figsize": (9, 4.5), "font.size": 13, "axes.titlesize": 14,
                         "axes.labelsize": 13, "lines.linewidth": 2.2, "axes.grid": True, "grid.alpha": 0.3,
                         "figure.dpi": 90})


def plot_history(hist, title: str = "training curves"):
    """Loss and accuracy per epoch, train vs validation."""
    style()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for col, lab in (("train_loss", "train"), ("val_loss", "validation")):
        a1.plot(hist["epoch"], hist[col], marker="o", label=lab)
    for col, lab in (("train_acc", "train"), ("val_acc", "validation")):
        a2.plot(hist["epoch"], 100 * hist[col], marker="o", label=lab)
    a1.set(title="cross-entropy loss", xlabel="epoch", ylabel="loss (nats)")
    a2.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for a in (a1, a2):
        a.legend()
        a.set_xticks(list(hist["epoch"]))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(labels, preds, names=("ham", "spam"), title: str = "confusion matrix (test set)"):
    style()
    k = len(names)
    cm = np.zeros((k, k), dtype=int)
    for y, p in zip(labels, preds):
        cm[int(y), int(p)] += 1
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(cm, cmap="Blues")
    ax.grid(False)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=16,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names,
           xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    return fig, cm


def plot_compare_histories(histories: dict, title: str = "methods compared"):
    """Validation accuracy and training loss per epoch for several runs (a dict name -> history)."""
    style()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, h in histories.items():
        a1.plot(h["epoch"], h["train_loss"], marker="o", label=name)
        a2.plot(h["epoch"], 100 * h["val_acc"], marker="o", label=name)
    a1.set(title="training loss", xlabel="epoch", ylabel="loss (nats)")
    a2.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for a in (a1, a2):
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
