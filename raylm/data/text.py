"""Text: ``text,label`` rows -> fixed-length token ids with the model's HF tokenizer."""

from __future__ import annotations

import numpy as np


def tokenize_batch(batch: dict, *, tokenizer_source: str, max_length: int, label_index: dict[str, int],
                   text_column: str, label_column: str) -> dict[str, np.ndarray]:
    from raylm.data.images import encode_labels

    encoded = tokenize(list(map(str, batch[text_column])), tokenizer_source, max_length)
    encoded["label"] = encode_labels(batch[label_column], label_index)
    return encoded


def tokenize(texts: list[str], tokenizer_source: str, max_length: int) -> dict[str, np.ndarray]:
    """Padding to max_length keeps every batch the same shape (one compiled graph, simple stacking)."""
    from raylm.models.text import load_tokenizer

    enc = load_tokenizer(tokenizer_source)(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
