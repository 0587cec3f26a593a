"""The CPU speed-ups: length-bucketed batches, the bf16 decision, thread settings."""
import collections
import sys

import pytest
import torch

from lora_lab.data import LengthBucketSampler, batch_mix, collate, make_loader, padding_share
from lora_lab.utils import precision, threads

LENGTHS = [((i * 37) % 97) + 1 for i in range(203)]  # 203 examples, lengths 1..97 in a scrambled order


class _Toy(torch.utils.data.Dataset):
    def __len__(self):
        return len(LENGTHS)

    def __getitem__(self, i):
        return [1] * LENGTHS[i], i % 2


def _batches(sampler, batch_size):
    idx = list(sampler)
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def test_buckets_pad_less_and_cover_each_example_once_per_epoch():
    s = LengthBucketSampler(LENGTHS, 8, seed=1, drop_last=True)
    assert len(s) == len(list(s)) == 200  # 25 full batches; 3 examples left out this epoch
    assert len(set(s)) == 200
    plain = torch.utils.data.DataLoader(_Toy(), 8, shuffle=True, drop_last=True, collate_fn=collate,
                                        generator=torch.Generator().manual_seed(1))
    bucketed = torch.utils.data.DataLoader(_Toy(), 8, sampler=s, drop_last=True, collate_fn=collate)
    assert padding_share(bucketed) < padding_share(plain) / 3


def test_buckets_are_seeded_and_change_every_epoch():
    a, b = LengthBucketSampler(LENGTHS, 8, seed=5), LengthBucketSampler(LENGTHS, 8, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(list(a)) != first
    # which examples share a batch changes too, not only the order of batches
    pairs = lambda s: {frozenset(bt) for bt in _batches(s, 8)}  # noqa: E731
    b.set_epoch(1)
    assert pairs(b) != {frozenset(bt) for bt in (first[i:i + 8] for i in range(0, len(first), 8))}


def test_buckets_split_across_replicas_like_one_process():
    one = LengthBucketSampler(LENGTHS, 16, seed=3).global_order()
    ranks = [list(LengthBucketSampler(LENGTHS, 8, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    # global batch j of one process = rank 0's batch j + rank 1's batch j
    for j, glob in enumerate(one[i:i + 16] for i in range(0, len(one), 16)):
        assert sorted(glob) == sorted(ranks[0][8 * j:8 * j + 8] + ranks[1][8 * j:8 * j + 8])


def test_buckets_without_drop_last_keep_every_example():
    s = LengthBucketSampler(LENGTHS, 8, seed=1, drop_last=False)
    idx = list(s)
    assert len(idx) == 208 and set(idx) == set(range(203))
    assert max(collections.Counter(idx).values()) == 2


@pytest.mark.parametrize("kw, msg", [(dict(batch_size=0), "batch_size"), (dict(batch_size=300), "cannot fill")])
def test_buckets_bad_input(kw, msg):
    with pytest.raises(ValueError, match=msg):
        LengthBucketSampler(LENGTHS, **kw)


# like SMS spam: the long messages are mostly one class (spam), so sorting by length sorts by class
SPAMMY = [(n, int(n > 60) if i % 20 else int(n <= 60)) for i, n in enumerate(LENGTHS)]


class _Spammy(torch.utils.data.Dataset):
    def __len__(self):
        return len(SPAMMY)

    def __getitem__(self, i):
        n, y = SPAMMY[i]
        return [1] * n, y


def test_buckets_keep_the_classes_mixed_when_given_the_labels():
    random, length, mixed = (batch_mix(make_loader(_Spammy(), 8, shuffle=True, drop_last=True, seed=1, bucket=b))
                             for b in (False, "length", True))
    assert length["single_class"] > 0.3  # the fault: length-sorted pools sort spam from ham
    assert mixed["single_class"] <= random["single_class"]  # the fix: no worse than random batches
    assert mixed["padding"] < random["padding"] * 0.9  # and still padding less than random batches
    assert length["padding"] < mixed["padding"]  # the price, which lesson 3 shows


def test_mixed_buckets_hold_the_classes_in_the_pools_proportions():
    labels = [y for _, y in SPAMMY]
    s = LengthBucketSampler([n for n, _ in SPAMMY], 8, labels=labels, seed=2, pool_batches=25)
    batches = _batches(s, 8)
    share = sum(labels) / len(labels)
    for b in batches:  # each batch within one message of the pool's class share
        assert abs(sum(labels[i] for i in b) - 8 * share) <= 1.5
    assert sorted(i for b in batches for i in b) == sorted(set(s))  # still each example at most once
    s.set_epoch(1)
    assert _batches(s, 8) != batches  # and a new order each epoch


def test_bucket_labels_and_choice_are_checked():
    with pytest.raises(ValueError, match="one label per example"):
        LengthBucketSampler(LENGTHS, 8, labels=[0, 1])
    with pytest.raises(ValueError, match="'mixed'"):
        make_loader(_Toy(), 8, shuffle=True, bucket="sorted")
    assert make_loader(_Toy(), 8, shuffle=True, bucket="length").sampler.labels is None
    assert make_loader(_Toy(), 8, shuffle=True, bucket=True).sampler.labels == [i % 2 for i in range(203)]


def test_native_bf16_is_read_from_the_flags():
    assert precision.cpu_has_native_bf16(["avx2", "avx512f", "avx512_bf16"])
    assert precision.cpu_has_native_bf16(["avx2", "amx_bf16"])
    assert not precision.cpu_has_native_bf16(["avx2", "avx512f"])


def test_auto_never_picks_bf16_without_native_support(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda flags=None: False)
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda **k: pytest.fail("must not probe an emulating CPU"))
    precision.cpu_autocast_dtype.cache_clear()
    try:
        assert precision.cpu_autocast_dtype() is None
    finally:
        precision.cpu_autocast_dtype.cache_clear()


@pytest.mark.parametrize("speedup, expected", [(2.5, torch.bfloat16), (1.05, None)])
def test_auto_follows_the_probe_on_native_cpus(monkeypatch, speedup, expected):
    monkeypatch.delenv("LORA_LAB_CPU_BF16", raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda flags=None: True)
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda **k: {"speedup": speedup})
    precision.cpu_autocast_dtype.cache_clear()
    try:
        assert precision.cpu_autocast_dtype() is expected
    finally:
        precision.cpu_autocast_dtype.cache_clear()


def test_probe_measures_both_formats():
    r = precision.probe_cpu_bf16(width=64, tokens=16, reps=2)
    assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0 and r["speedup"] == pytest.approx(r["fp32_ms"] / r["bf16_ms"])


def test_probe_leaves_the_callers_random_stream_alone():
    # the probe runs inside the first training call of a process, after finetune's set_seed: if it drew from
    # the global generator, that run's dropout masks would differ from the same seed's run later in the process
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    precision.probe_cpu_bf16(width=16, tokens=8, reps=1)
    assert torch.equal(torch.rand(5), expected)


def test_thread_defaults_respect_the_user(monkeypatch):
    env = {"OMP_WAIT_POLICY": "ACTIVE", "LORA_LAB_THREADS": "polite"}
    monkeypatch.delitem(sys.modules, "torch")  # as if lora_lab were imported first; restored after the test
    applied = threads.configure(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and "OMP_WAIT_POLICY" not in applied
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert threads.configure({"LORA_LAB_THREADS": "keep"}) == {}


def test_polite_waiting_is_opt_in(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    assert "OMP_WAIT_POLICY" not in threads.configure({})  # default: libgomp's own (fastest alone)
    assert threads.configure({"LORA_LAB_THREADS": "polite"})["OMP_WAIT_POLICY"] == "PASSIVE"


def test_wait_policy_is_not_claimed_once_torch_is_loaded():
    env = {"LORA_LAB_THREADS": "polite"}
    applied = threads.configure(env)  # torch is imported in this process
    assert "OMP_WAIT_POLICY" not in env and "OMP_WAIT_POLICY" not in applied


def test_precision_env_replaces_auto(monkeypatch):
    from lora_lab.utils.precision import precision_for

    monkeypatch.setenv("LORA_LAB_PRECISION", "fp32")
    assert precision_for(torch.device("cpu"), "auto") is None
    monkeypatch.setenv("LORA_LAB_PRECISION", "bf16")
    assert precision_for(torch.device("cpu"), "auto") is torch.bfloat16
    assert precision_for(torch.device("cpu"), "fp32") is None  # an explicit choice is kept


def test_training_loaders_bucket_by_default():
    from lora_lab.experiments.profiles import gpt2_backbone

    bb = gpt2_backbone("tiny", lambda n: None)
    assert isinstance(bb.loader(_Toy(), 8, shuffle=True).sampler, LengthBucketSampler)
    assert not isinstance(bb.loader(_Toy(), 8, shuffle=True, bucket=False).sampler, LengthBucketSampler)
    assert not isinstance(bb.loader(_Toy(), 8).sampler, LengthBucketSampler)  # evaluation keeps its order


def test_precision_names_cover_dtypes_and_recorded_strings():
    from lora_lab.utils.precision import precision_name

    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]
    assert [precision_name(s) for s in ("fp32", "torch.bfloat16", "torch.float16")] == ["fp32", "bf16", "fp16"]
