"""Text classifiers: any Hugging Face sequence-classification model, offline by default."""

from __future__ import annotations

from torch import nn

from raylm.hf_sources import bundled_text_model_dir, load_tokenizer, offline_if_local, tokenizer_source
from raylm.registry import MODELS


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
