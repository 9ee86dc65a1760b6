"""The token ids a text model is fed come from ``tokenizer.json`` through the ``tokenizers`` library alone
(raylm/hf_sources.py ``load_encoder``: no transformers import in a serving replica): they must be the ids
the transformers tokenizer gives for the same texts and settings, the ones the model was trained on."""

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from raylm.hf_sources import _direct_encoder, bundled_text_model_dir, load_encoder

TEXTS = [
    "The match ended in a draw after extra time.",
    "UPPER and lower CaSe, café, naïve, Ångström, straße",
    "数字 and 中文字符 mixed with English",
    "emoji 🙂🚀 and symbols © ® ™ ± ∞",
    "  leading and trailing spaces, tabs\tand\nnew lines  ",
    "[CLS] [SEP] [MASK] [PAD] [UNK] written in the text",
    "antidisestablishmentarianism " * 3,
    "a",
    "12,345.67 $ 89% #hashtag @user e-mail@example.com http://x.y/z?a=1",
    " ".join(f"word{i}" for i in range(200)),  # far past max_length: truncated
    "\u200b zero width \u00a0 no-break \x07 control",
]


@pytest.fixture(scope="module", params=["bundled", "saved"])
def tokenizer_dir(request, tmp_path_factory) -> str:
    """The bundled MiniLM directory, and what a checkpoint or artifact keeps (save_pretrained's tokenizer/)."""
    if request.param == "bundled":
        return bundled_text_model_dir()
    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(bundled_text_model_dir()).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("max_length", [8, 32, 128])
def test_the_direct_encoder_gives_the_transformers_ids(tokenizer_dir, max_length):
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)(
        TEXTS, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    direct = _direct_encoder(tokenizer_dir, max_length)
    assert direct is not None  # the fast path is the one taken for these directories
    for batch in (TEXTS, TEXTS[:1], TEXTS[3:7]):  # a batch's padding never depends on its other texts
        got = direct(batch)
        rows = [TEXTS.index(t) for t in batch]
        assert got["input_ids"].dtype == np.int64 and got["input_ids"].shape == (len(batch), max_length)
        np.testing.assert_array_equal(got["input_ids"], reference["input_ids"][rows])
        np.testing.assert_array_equal(got["attention_mask"], reference["attention_mask"][rows])


def test_a_directory_without_tokenizer_json_goes_through_transformers(tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        (tmp_path / name).write_bytes((Path(bundled_text_model_dir()) / name).read_bytes())
    assert _direct_encoder(str(tmp_path), 16) is None  # only vocab.txt: transformers builds the tokenizer from it
    got = load_encoder(str(tmp_path), 16)(TEXTS)
    want = load_encoder(bundled_text_model_dir(), 16)(TEXTS)
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
