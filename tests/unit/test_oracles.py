"""The accuracy bars of tests/helpers/oracles.py hold for the data the integration tests use."""

import csv
from pathlib import Path

import pytest

from raylm.data.files import in_validation
from tests.conftest import _easy_text
from tests.helpers.configs import tiny_overrides
from tests.helpers.oracles import MAJORITY, MIN_SAMPLES, assert_beats_chance, binomial_tail, chance_bar

_FRACTION = float(next(o for o in tiny_overrides(Path("root"), {"image": "", "audio": "", "text": ""}, "image")
                       if o.startswith("data.validation_fraction=")).split("=")[1])


def _split_counts(keys_by_label: dict[str, list[str]]) -> list[int]:
    return [sum(in_validation(k, _FRACTION) for k in keys) for keys in keys_by_label.values()]


@pytest.mark.parametrize("modality, files", [
    ("image", {label: [f"{label}/{i:03d}.png" for i in range(100)] for label in ("horizontal", "vertical")}),
    ("audio", {label: [f"{label}/{i:03d}.wav" for i in range(110)] for label in ("low", "high")}),
])
def test_folder_validation_splits_are_large_enough_and_the_majority_is_as_documented(modality, files):
    counts = _split_counts(files)
    assert sum(counts) >= MIN_SAMPLES
    assert max(counts) / sum(counts) == pytest.approx(MAJORITY[modality])


def test_text_validation_split(tmp_path):
    with open(_easy_text(tmp_path / "t.csv")) as f:
        rows = list(csv.DictReader(f))
    counts = _split_counts({label: [r["text"] for r in rows if r["label"] == label] for label in ("pos", "neg")})
    assert sum(counts) >= MIN_SAMPLES and max(counts) / sum(counts) == pytest.approx(MAJORITY["text"])


def test_bar_is_the_least_accuracy_chance_reaches_with_p_below_1e4():
    n, p = 61, 32 / 61
    k = round(chance_bar(n, p) * n)
    assert binomial_tail(n, k, p) < 1e-4 <= binomial_tail(n, k - 1, p)
    assert (k, round(chance_bar(62, 35 / 62) * 62), round(chance_bar(63, 33 / 63) * 63)) == (47, 50, 48)


def test_gate_refuses_chance_and_too_few_samples():
    assert_beats_chance(1.0, 61)
    with pytest.raises(AssertionError, match="within chance"):
        assert_beats_chance(0.75, 61)  # 46 of 61: a coin does this with p = 2e-4
    with pytest.raises(AssertionError, match="proves little"):
        assert_beats_chance(1.0, 14)
