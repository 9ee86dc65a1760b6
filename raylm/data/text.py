"""Text: ``text,label`` rows -> fixed-length token ids with the model's HF tokenizer."""

from __future__ import annotations

import unicodedata

import numpy as np

# Where the tokenizer comes from is shared with the text models, one layer down; the names stay
# importable from here for data/'s own modules and the checkpoint writer.
from raylm.hf_sources import bundled_text_model_dir, load_encoder, load_tokenizer, offline_if_local, tokenizer_source

__all__ = ["bundled_text_model_dir", "load_tokenizer", "offline_if_local", "text_item", "text_special_ids",
           "tokenize", "tokenize_batch", "tokenizer_source"]


INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}  # control, format (zero-width), separators: Unicode categories


def text_item(value, settings=None, limits=None) -> str:
    """A stored text (a table cell, a request item) as the model's input; ValueError when it is empty.
    The text modality's ``decode``: the acceptance rule of the check, of training and of serving."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        # pyarrow reads a CSV column holding one non-UTF-8 cell as binary, every cell bytes: str() of them
        # trained on "b'...'" and let b'' pass as a text. Each cell is decoded; the one that is not UTF-8 is refused.
        raw = bytes(value)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at {err.start}: "
                             f"{raw[max(err.start - 20, 0):err.start + 20]!r})") from None
    text = "" if value is None else str(value)
    if not any(unicodedata.category(ch) not in INVISIBLE for ch in text):
        # Zero-width and control characters alone (U+200B, U+0001) are no text either: they were answered 200.
        raise ValueError("empty text" if not text.strip() else "empty text (only invisible or control characters)")
    return text


def tokenize_batch(batch: dict, *, tokenizer_source: str, max_length: int, label_index: dict[str, int],
                   text_column: str, label_column: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: rows -> token ids and label ids. Rows the data check refuses (empty text or
    label, a label outside task.labels) are left out here too: a blank row is never a class."""
    from raylm.data.rules import label_text, sample_problem

    texts, labels = [], []
    for text, raw_label in zip(batch[text_column], batch[label_column]):
        label = label_text(raw_label)
        if sample_problem(text_item, text, label, None, label_index) is None:
            texts.append(text_item(text))
            labels.append(label_index[label])
    encoded = tokenize(texts, tokenizer_source, max_length) if texts else {
        "input_ids": np.zeros((0, max_length), np.int64), "attention_mask": np.zeros((0, max_length), np.int64)}
    encoded["label"] = np.asarray(labels, np.int64)
    return encoded


def tokenize(texts: list[str], tokenizer_source: str, max_length: int) -> dict[str, np.ndarray]:
    """Padding to max_length keeps every batch the same shape (one compiled graph, simple stacking)."""
    return load_encoder(tokenizer_source, max_length)(texts)


def text_special_ids(tokenizer_source: str) -> dict:
    """What text augmentation must know of the tokenizer: its special ids (never moved), the unknown
    token (dropout's replacement) and padding (what deletions leave at the end)."""
    tok = load_tokenizer(tokenizer_source)
    unknown = tok.unk_token_id if tok.unk_token_id is not None else tok.mask_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    if unknown is None:
        raise ValueError("augment.text.dropout_p: the tokenizer has neither an unknown nor a mask token")
    return {"special_ids": list(tok.all_special_ids), "unknown_id": int(unknown), "pad_id": int(pad)}
