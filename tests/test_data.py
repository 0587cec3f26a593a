"""The SMS Spam Collection: download (from a local HTTP server), verification, split, batching."""
import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial

import pandas as pd
import pytest
import torch

from lora_lab.data import (
    SMS_SHA256,
    SpamDataset,
    balanced_split,
    collate,
    default_data_dir,
    download_sms_spam,
    load_sms_spam,
    make_loader,
    spam_splits,
)
from lora_lab.utils.files import DataIntegrityError, verify_sha256

needs_data = pytest.mark.needs_data


@pytest.fixture(scope="module")
def df():
    return load_sms_spam()


@needs_data
def test_collection_counts(df):
    assert len(df) == 5574
    assert (df["label"] == "spam").sum() == 747 and (df["label"] == "ham").sum() == 4827
    assert list(df.columns) == ["label", "text"]


@needs_data
def test_balanced_split_sizes_and_seed(df):
    train, val, test = balanced_split(df, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    allrows = pd.concat([train, val, test])
    assert (allrows["label"] == "spam").sum() == 747 and (allrows["label"] == "ham").sum() == 747
    assert not set(train["text"] + "|" + train.index.astype(str)) & set(test["text"] + "|" + test.index.astype(str))
    again = balanced_split(df, seed=123)
    assert all(a.equals(b) for a, b in zip((train, val, test), again))
    other = balanced_split(df, seed=7)
    assert not train["text"].equals(other[0]["text"])
    assert set(train["label_id"]) == {0, 1}


@pytest.fixture
def served_zip(tmp_path):
    """Serve a zip of the real file on 127.0.0.1 (loopback only) and return (url, served_dir)."""
    payload = (default_data_dir() / "SMSSpamCollection").read_bytes()
    root = tmp_path / "www"
    root.mkdir()

    def write(name, data):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("SMSSpamCollection", data)
            zf.writestr("readme", "SMS Spam Collection")
        (root / name).write_bytes(buf.getvalue())

    write("good.zip", payload)
    write("bad.zip", payload[:-10])
    (root / "notzip.zip").write_bytes(b"<html>error page</html>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@needs_data
def test_download_extract_verify(served_zip, tmp_path):
    out = tmp_path / "data"
    path = download_sms_spam(out, url=f"{served_zip}/good.zip", progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMS_SHA256
    assert sorted(p.name for p in out.iterdir()) == ["SMSSpamCollection"]  # no temp files left
    # verified file present: no network (an unreachable URL is never contacted)
    assert download_sms_spam(out, url="http://127.0.0.1:9/nothing.zip") == path


@needs_data
def test_download_with_wrong_checksum_writes_nothing(served_zip, tmp_path):
    out = tmp_path / "data"
    with pytest.raises(DataIntegrityError, match=f"expected {SMS_SHA256}"):
        download_sms_spam(out, url=f"{served_zip}/bad.zip", progress=False)
    assert not list(out.iterdir())
    with pytest.raises(DataIntegrityError, match="not a zip"):
        download_sms_spam(out, url=f"{served_zip}/notzip.zip", progress=False)
    with pytest.raises(ConnectionError, match="Connect to the internet"):
        download_sms_spam(out, url="http://127.0.0.1:9/x.zip", progress=False)


def test_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "SMSSpamCollection").write_text("ham\thello\n")
    actual = hashlib.sha256(b"ham\thello\n").hexdigest()
    with pytest.raises(DataIntegrityError, match=f"sha256 {actual}, expected {SMS_SHA256}.*Delete it"):
        load_sms_spam(tmp_path)


@needs_data
def test_dataset_truncates_and_loader_pads_per_batch(df):
    train, _, _ = balanced_split(df)
    ds = SpamDataset(train, max_length=20)
    assert max(len(ids) for ids, _ in ds) == 20 == ds.longest  # the cap truncates; longest reports it
    full = SpamDataset(train)
    assert full.longest > 20
    with pytest.warns(PendingDeprecationWarning, match="read SpamDataset.longest"):
        assert full.max_length == full.longest  # the old name still reads, with a pointer to the new one
    loader = make_loader(full, batch_size=8)
    for batch, first in zip(loader, range(0, len(full), 8)):
        assert batch.input_ids.shape[1] == int(batch.lengths.max())  # only as long as its longest
        for i, (row, n) in enumerate(zip(batch.input_ids, batch.lengths)):
            ids = full[first + i][0]
            assert n == len(ids) and row[:n].tolist() == ids  # the message itself, then padding only
            assert torch.all(row[n:] == 50256)
    b = collate([([1, 2, 3], 0), ([4], 1)], pad_to=6)
    assert b.input_ids.tolist() == [[1, 2, 3, 50256, 50256, 50256], [4, 50256, 50256, 50256, 50256, 50256]]
    assert b.lengths.tolist() == [3, 1] and b.labels.tolist() == [0, 1]


@needs_data
def test_shuffled_loader_is_seeded(df):
    train, _, _ = balanced_split(df)
    ds = SpamDataset(train.head(64))
    first = [b.labels.tolist() for b in make_loader(ds, 8, shuffle=True, seed=1)]
    again = [b.labels.tolist() for b in make_loader(ds, 8, shuffle=True, seed=1)]
    assert first == again


@needs_data
def test_per_class_subset_and_other_label_names(df):
    """spam_splits(per_class) is balanced_split(per_class); any two-class task gets its own label ids."""
    a = spam_splits(seed=5, per_class=20)
    b = balanced_split(df, seed=5, per_class=20)
    assert all(x.equals(y) for x, y in zip(a, b)) and sum(map(len, a)) == 40
    questions = df.assign(label=df.text.str.contains("?", regex=False).map({True: "question", False: "statement"}))
    parts = balanced_split(questions, seed=5, per_class=30, labels={"statement": 0, "question": 1})
    whole = pd.concat(parts)
    assert (whole.label == "question").sum() == 30 == (whole.label_id == 1).sum()
    with pytest.raises(ValueError, match=r"labels \['question', 'statement'\] have no id"):
        balanced_split(questions)  # the default ids are ham 0 / spam 1
    with pytest.raises(ValueError, match="per_class must be a whole number from 1 to 747"):
        balanced_split(df, per_class=0)


def test_verify_sha256_names_the_file_both_checksums_and_the_fix(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert verify_sha256(f, good) == good
    with pytest.raises(DataIntegrityError, match=f"the weights {f} is corrupt.*sha256 {good}, expected {'0' * 64}. "
                                                 "Reinstall"):
        verify_sha256(f, "0" * 64, what="the weights", fix="Reinstall.")
    # one type for every checksum failure, caught by code written against either old type
    assert issubclass(DataIntegrityError, RuntimeError) and issubclass(DataIntegrityError, ValueError)


@pytest.mark.parametrize("frame, kwargs, message", [
    (pd.DataFrame({"label": ["ham"] * 6, "text": list("abcdef")}), {}, "one class only"),
    (pd.DataFrame({"text": list("abcdef")}), {}, "no 'label' column"),
    (pd.DataFrame({"label": ["ham", "spam"] * 5, "text": list("abcdefghij")}), {"fractions": (-0.2, 0.1)},
     "fractions must be"),
    (pd.DataFrame({"label": ["ham", "spam"] * 5, "text": list("abcdefghij")}), {"fractions": (0.8, 0.3)},
     "together below 1"),
])
def test_balanced_split_refuses_what_cannot_be_a_balanced_split(frame, kwargs, message):
    """A one-class frame, no label column, or fractions that leave no test split (or put training rows in it)
    are errors naming the problem, not a "balanced" split that is not one."""
    from lora_lab.data import balanced_split

    with pytest.raises(ValueError, match=message):
        balanced_split(frame, **kwargs)


def test_set_seed_takes_numpy_integers_and_refuses_bad_seeds_before_reseeding():
    import random

    import numpy as np

    from lora_lab.utils.machine import set_seed

    set_seed(np.int64(7))  # a seed from np.arange in a sweep
    first = random.random()
    set_seed(7)
    assert random.random() == first
    for bad in (-1, 2**32, 1.5, None, True):
        set_seed(3)
        state = random.getstate()
        with pytest.raises(ValueError, match="seed must be a whole number"):
            set_seed(bad)
        assert random.getstate() == state  # nothing was reseeded


@pytest.mark.parametrize("text", ["", "   ", "\x00\x00", "\u200b\u200b", "\ufeff \n"])
def test_a_message_with_nothing_to_read_is_empty_for_every_tokenizer(text):
    """Blank, NUL-only and zero-width-only messages still become tokens ([CLS] [SEP] for BERT, a space or a NUL
    byte for GPT-2's BPE); the dataset refuses them by row, as it does an empty one."""
    from lora_lab.data import SpamDataset, has_content

    class Tokens:  # a tokenizer that always returns tokens, as BERT's does ([CLS] [SEP])
        def encode_ordinary_batch(self, texts):
            return [[101, 102] for _ in texts]

    assert not has_content(text)
    frame = pd.DataFrame({"text": ["a real message", text], "label_id": [0, 1]}, index=[10, 11])
    with pytest.raises(ValueError, match=r"empty or blank .* index 11"):
        SpamDataset(frame, Tokens())
    assert has_content("win \u200bcash")  # visible characters beside invisible ones are a message
