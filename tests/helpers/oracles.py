"""Oracles a broken build cannot pass by luck.

Accuracy gates: a model that learned nothing is a *constant* predictor (it scores the majority
class's share of the validation split exactly) or a *random* one (it scores Binomial(n, p) / n).
``chance_bar(n, majority)`` is the least accuracy such a predictor reaches with probability
< 1e-4 on ``n`` samples, taking p = the larger of 0.5 and the majority share (a biased coin that
prefers the majority class does no better than p). The tiny data of tests/conftest.py
(``data_root``) holds out, with data.validation_fraction=0.3:

    images: 100 + 100 files -> 61 validation (29 / 32): majority 0.525 -> bar 47/61 = 0.770
    audio:  110 + 110 files -> 62 validation (27 / 35): majority 0.565 -> bar 50/62 = 0.806
    text:   100 + 100 rows  -> 63 validation (33 / 30): majority 0.524 -> bar 48/63 = 0.762

e.g. P(Binomial(61, 0.525) >= 47) = 6.7e-5 while P(>= 46) = 2.0e-4, so 47 correct of 61 is the bar.
(The table is checked by tests/unit/test_oracles.py.) Gates need >= 60 samples: on the 14 of the
old data a random predictor passed a 0.75 gate with p = 0.09, DDP without gradient sync easily.
"""

from __future__ import annotations

from math import comb

ALPHA = 1e-4
MIN_SAMPLES = 60
# The majority class's share of each validation split of data_root (see the table above).
MAJORITY = {"image": 32 / 61, "audio": 35 / 62, "text": 33 / 63}


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def chance_bar(n: int, majority: float, alpha: float = ALPHA) -> float:
    """Least accuracy (k / n) a constant or coin-flip predictor reaches with probability < alpha."""
    p = max(0.5, majority)
    k = next(k for k in range(n + 1) if binomial_tail(n, k, p) < alpha)
    return k / n


def assert_beats_chance(accuracy: float, samples: int, modality: str = "image") -> None:
    """``accuracy`` on ``samples`` validation samples of data_root's ``modality`` is no luck."""
    majority = MAJORITY[modality]
    assert samples >= MIN_SAMPLES, f"an accuracy gate on {samples} samples proves little (need >= {MIN_SAMPLES})"
    bar = chance_bar(samples, majority)
    assert accuracy >= bar, f"accuracy {accuracy:.3f} on {samples} samples is within chance (bar {bar:.3f}, p < {ALPHA})"
