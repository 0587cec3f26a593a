"""The data: the SMS Spam Collection and how its batches are made.

* :mod:`lora_lab.data.sms` - download (verified), split, tokenize, batch
* :mod:`lora_lab.data.bucketing` - length-bucketed batches that pad less
"""
from .bucketing import LengthBucketSampler, batch_mix, padding_share
from .sms import (
           LABELS,
           PAD_TOKEN_ID,
           SMS_SHA256,
           SMS_URL,
           Batch,
           DataIntegrityError,
           SpamDataset,
           balanced_split,
           collate,
           default_data_dir,
           download_sms_spam,
           get_tokenizer,
           has_content,
           load_sms_spam,
           make_loader,
           spam_splits,
)

__all__ = ["SMS_URL", "SMS_SHA256", "default_data_dir", "download_sms_spam", "load_sms_spam", "balanced_split",
           "spam_splits", "get_tokenizer", "SpamDataset", "Batch", "collate", "make_loader", "DataIntegrityError",
           "LABELS", "PAD_TOKEN_ID", "has_content", "LengthBucketSampler", "padding_share", "batch_mix"]
