"""compress.vocabulary=train: the embedding keeps the training split's tokens, the logits on them stay
the dense model's, other ids read [UNK], and the lookup survives the ONNX export."""

import numpy as np
import pytest
import torch

from raylm.compress.vocabulary import RemappedEmbedding, shrink_vocabulary
from raylm.config import ConfigError
from raylm.hf_sources import bundled_text_model_dir, load_tokenizer
from raylm.models.text import SequenceClassifier


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(bundled_text_model_dir())


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)
    return SequenceClassifier(BertForSequenceClassification(config)).eval()


def _ids(tokenizer, texts):
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=12, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)


def test_kept_tokens_give_the_dense_logits_and_others_read_unk(model, tokenizer):
    train_ids, _ = _ids(tokenizer, ["the match ended in a goal", "a storm and rain today"])
    shrunk = shrink_vocabulary(model, train_ids, tokenizer)
    embedding = shrunk.hf.get_input_embeddings()
    assert isinstance(embedding, RemappedEmbedding)
    expected_rows = len(set(train_ids.ravel()) | set(tokenizer.all_special_ids))
    assert embedding.rows.weight.shape[0] == expected_rows < len(tokenizer) // 100
    assert model.hf.get_input_embeddings().weight.shape[0] == len(tokenizer)  # the teacher is untouched

    ids, mask = _ids(tokenizer, ["rain ended the match", "a goal today"])  # only training tokens
    with torch.inference_mode():
        same = shrunk(torch.from_numpy(ids), torch.from_numpy(mask))
        torch.testing.assert_close(same, model(torch.from_numpy(ids), torch.from_numpy(mask)), rtol=0, atol=1e-6)
        unseen, unseen_mask = _ids(tokenizer, ["the laptop battery"])  # laptop, battery: not in training
        as_unk = np.where(np.isin(unseen, train_ids) | np.isin(unseen, tokenizer.all_special_ids), unseen,
                          tokenizer.unk_token_id)
        assert (as_unk == tokenizer.unk_token_id).sum() >= 2
        torch.testing.assert_close(shrunk(torch.from_numpy(unseen), torch.from_numpy(unseen_mask)),
                                   model(torch.from_numpy(as_unk), torch.from_numpy(unseen_mask)), rtol=0, atol=1e-6)


def test_the_lookup_is_part_of_the_exported_onnx_graph(model, tokenizer, tmp_path):
    from raylm.artifacts.onnx_runtime import onnx_predictor
    from raylm.compress.quantize import export_onnx

    train_ids, _ = _ids(tokenizer, ["cheese soup for dinner", "new chip and cloud software"])
    shrunk = shrink_vocabulary(model, train_ids, tokenizer)
    ids, mask = _ids(tokenizer, ["soup and software", "a spicy dinner in the stadium"])  # stadium, spicy: unseen
    feeds = {"input_ids": ids, "attention_mask": mask}
    path = export_onnx(shrunk, {k: v[:1] for k, v in feeds.items()}, tmp_path / "m.onnx")
    with torch.inference_mode():
        in_memory = shrunk(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(onnx_predictor(path, 1)(feeds), in_memory, atol=1e-5)
    dense = export_onnx(model, {k: v[:1] for k, v in feeds.items()}, tmp_path / "dense.onnx")
    dropped_bytes = (len(tokenizer) - shrunk.hf.get_input_embeddings().rows.weight.shape[0]) * 16 * 4
    lookup_bytes = len(tokenizer) * 4  # one int32 per id
    assert dense.stat().st_size - path.stat().st_size >= 0.99 * dropped_bytes - lookup_bytes


@pytest.mark.parametrize("modality, override", [("image", "compress.vocabulary=train"),
                                                ("text", "compress.export=safetensors")])
def test_vocabulary_outside_text_onnx_names_the_field(tiny_config, modality, override):
    overrides = ("compress.vocabulary=train", override) if modality == "text" else (override,)
    with pytest.raises(ConfigError, match=r"compress\.vocabulary"):
        tiny_config(modality, *overrides)
