"""Length-bucketed batches: put messages of similar length together, so a batch pads less.

A batch is padded to its longest message. SMS messages run from 2 to ~200 tokens, so a batch of 8 drawn
at random often pads seven short messages up to one long one, and the model computes on padding that
changes nothing. Bucketing fixes that without giving up randomness:

1. each epoch, shuffle all indices (seeded: ``seed + epoch``, so every epoch has a new order and a given
   seed always the same one);
2. cut the shuffled list into pools of ``pool_batches`` global batches, and sort each pool by length;
3. cut each sorted pool into batches, and shuffle the order of all batches.

Batches are then made of neighbours in length (little padding), but which messages meet in a batch, and
in which order the batches come, still changes every epoch.

Sorting by length has a cost when length says something about the label. Spam is longer than ham, so a pool
sorted by length puts the spam together: on the SMS training split a third of the length-sorted batches of 8
hold a single class, against a few percent of random batches, and a single-class batch teaches "everything is
spam" for a step. So when the labels are given (``labels=``, as :func:`lora_lab.data.make_loader` does),
step 2 sorts each class *within* the pool by length and merges the classes by their place in their own
class's order (the shortest ham beside the shortest spam, the median beside the median): every batch then
holds the classes in about the pool's proportions, and still pads far less than a random batch. Lesson 3
measures both effects (:func:`batch_mix`). Under ``torch.distributed`` one *global*
batch (``batch_size x num_replicas`` messages) is formed this way and rank ``r`` takes every
``num_replicas``-th message of it, exactly as :class:`~torch.utils.data.DistributedSampler` interleaves,
so one process with ``num_replicas=1`` sees the same global batches as several together.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import DistributedSampler

__all__ = ["LengthBucketSampler", "padding_share", "batch_mix"]


class LengthBucketSampler(DistributedSampler):
    """A seeded, shuffling sampler whose consecutive ``batch_size`` indices have similar lengths.

    ``lengths[i]`` is the token count of example ``i``. Use it as a DataLoader's ``sampler`` with the same
    ``batch_size`` (see :func:`lora_lab.data.make_loader`, ``bucket=True``) and call
    ``set_epoch(epoch)`` each epoch, as with ``DistributedSampler``. With ``drop_last`` the examples that
    do not fill a last global batch are left out (a different few each epoch); without it the last batch
    is completed with examples from the start of the order, as ``DistributedSampler`` does.

    ``labels[i]`` (optional) is example ``i``'s class: given, every pool is sorted within each class and the
    classes are merged by their rank within their class, so batches keep the classes mixed (module docstring).
    """

    def __init__(self, lengths, batch_size: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 123,
                 drop_last: bool = True, pool_batches: int = 32, labels=None):
        if batch_size < 1 or pool_batches < 1:
            raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size} and {pool_batches}")
        self.lengths = [int(n) for n in lengths]
        if not self.lengths:
            raise ValueError("no examples to sample: lengths is empty")
        self.labels = None if labels is None else [int(y) for y in labels]
        if self.labels is not None and len(self.labels) != len(self.lengths):
            raise ValueError(f"labels has {len(self.labels)} entries and lengths {len(self.lengths)}: give one label "
                             "per example")
        super().__init__(range(len(self.lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=drop_last)
        self.batch_size, self.pool_batches = batch_size, pool_batches
        global_batch = batch_size * num_replicas
        n = len(self.lengths)
        self.total_size = (n // global_batch if drop_last else math.ceil(n / global_batch)) * global_batch
        if self.total_size == 0:
            raise ValueError(f"{n} examples cannot fill one batch of {batch_size} x {num_replicas} replicas with "
                             "drop_last=True: use a smaller batch size or drop_last=False")
        self.num_samples = self.total_size // num_replicas

    def global_order(self) -> list[int]:
        """This epoch's order of all examples (every replica's share interleaved), bucketed by length."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if len(order) < self.total_size:  # complete the last batch, as DistributedSampler pads
            order += (order * math.ceil(self.total_size / len(order)))[:self.total_size - len(order)]
        order = order[:self.total_size]
        global_batch = self.batch_size * self.num_replicas
        pool = global_batch * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = self._sort_pool(order[start:start + pool])
            batches += [chunk[j:j + global_batch] for j in range(0, len(chunk), global_batch)]
        shuffled = torch.randperm(len(batches), generator=g).tolist()
        return [i for b in shuffled for i in batches[b]]

    def _sort_pool(self, pool: list[int]) -> list[int]:
        """The pool by length; with labels, each class by length, merged by the place within its class."""
        if self.labels is None:
            return sorted(pool, key=lambda i: self.lengths[i])
        by_class: dict[int, list[int]] = {}
        for i in pool:
            by_class.setdefault(self.labels[i], []).append(i)
        keyed = []
        for members in by_class.values():
            members.sort(key=lambda i: self.lengths[i])  # stable: equal lengths keep the shuffled order
            keyed += [((k + 0.5) / len(members), i) for k, i in enumerate(members)]
        return [i for _, i in sorted(keyed, key=lambda t: t[0])]  # stable: ties keep the classes' order

    def __iter__(self):
        return iter(self.global_order()[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def padding_share(loader) -> float:
    """The share of the tokens in one pass over ``loader`` that are padding (0 = none)."""
    real = padded = 0
    for batch in loader:
        real += int(batch.lengths.sum())
        padded += batch.input_ids.numel()
    return 1 - real / padded if padded else 0.0


def batch_mix(loader) -> dict:
    """What one pass over ``loader`` (a training loader, its sampler's epoch as set) puts in its batches: the
    share of batches that hold a single class, and the share of tokens that are padding."""
    single = batches = 0
    for batch in loader:
        batches += 1
        single += int(batch.labels.unique().numel() == 1)
    return {"batches": batches, "single_class": single / batches if batches else 0.0,
            "padding": padding_share(loader)}
