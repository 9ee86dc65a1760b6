"""Text: ``text,label`` rows -> fixed-length token ids with the model's HF tokenizer."""

from __future__ import annotations

import numpy as np

# Where the tokenizer comes from is shared with the text models, one layer down; the names stay
# importable from here for data/'s own modules and the checkpoint writer.
from raylm.hf_sources import bundled_text_model_dir, load_tokenizer, offline_if_local, tokenizer_source

__all__ = ["bundled_text_model_dir", "load_tokenizer", "offline_if_local", "tokenize", "tokenize_batch",
           "tokenizer_source"]


def tokenize_batch(batch: dict, *, tokenizer_source: str, max_length: int, label_index: dict[str, int],
                   text_column: str, label_column: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: rows -> token ids and label ids. Rows the data check refuses (empty text or
    label, a label outside task.labels) are left out here too: a blank row is never a class."""
    from raylm.data.check import acceptance_problem, label_text

    texts, labels = [], []
    for text, raw_label in zip(batch[text_column], batch[label_column]):
        label = label_text(raw_label)
        if acceptance_problem("text", text, label, None, label_index) is None:
            texts.append(str(text))
            labels.append(label_index[label])
    encoded = tokenize(texts, tokenizer_source, max_length) if texts else {
        "input_ids": np.zeros((0, max_length), np.int64), "attention_mask": np.zeros((0, max_length), np.int64)}
    encoded["label"] = np.asarray(labels, np.int64)
    return encoded


def tokenize(texts: list[str], tokenizer_source: str, max_length: int) -> dict[str, np.ndarray]:
    """Padding to max_length keeps every batch the same shape (one compiled graph, simple stacking)."""
    enc = load_tokenizer(tokenizer_source)(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
