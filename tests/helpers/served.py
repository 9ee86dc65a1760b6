"""A served image model judged over real HTTP on the validation split's files, against their labels
(the folder each file sits in), never on the training files."""

from __future__ import annotations

import base64
from math import comb
from pathlib import Path

ALPHA = 1e-4


def validation_files(root: Path, fraction: float) -> list[tuple[Path, str]]:
    """``(file, label)`` of the validation split raylm holds out of an image folder tree (its own split
    function over the files it would list), in a stable order."""
    from raylm.data.files import label_of_path, split_files

    files = sorted(str(p) for p in Path(root).rglob("*.png"))
    _, val = split_files(files, str(root), fraction)
    return [(Path(p), label_of_path(p)) for p in val]


def image_body(paths: list[Path]) -> dict:
    return {"image": [base64.b64encode(p.read_bytes()).decode() for p in paths]}


def served_labels(url: str, files: list[tuple[Path, str]], chunk: int = 16, timeout_s: float = 60) -> list[str]:
    """The label the endpoint ``url`` (``.../predict``) answers for each file, ``chunk`` files a request."""
    import requests

    predicted: list[str] = []
    for i in range(0, len(files), chunk):
        response = requests.post(url, json=image_body([p for p, _ in files[i:i + chunk]]), timeout=timeout_s)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        predicted += [p["label"] for p in response.json()["predictions"]]
    assert len(predicted) == len(files)
    return predicted


def chance_bar_of(labels: list[str], alpha: float = ALPHA) -> float:
    """Least accuracy a predictor that learned nothing reaches with probability < ``alpha`` on these
    labels: a constant predictor scores the largest class's share, a random one Binomial(n, p) / n with
    p at most that share or 1 / classes; k is the least count with P(Binomial(n, p) >= k) < alpha."""
    n = len(labels)
    p = max(max(labels.count(c) for c in set(labels)) / n, 1 / len(set(labels)))
    tail = lambda k: sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))  # noqa: E731
    return next(k for k in range(n + 1) if tail(k) < alpha) / n


def assert_served_beats_chance(url: str, files: list[tuple[Path, str]]) -> float:
    """The served model's accuracy on ``files`` over HTTP clears the chance bar (>= 60 files); returned."""
    assert len(files) >= 60, f"{len(files)} validation files prove little (need >= 60)"
    labels = [label for _, label in files]
    predicted = served_labels(url, files)
    accuracy = sum(p == t for p, t in zip(predicted, labels)) / len(labels)
    bar = chance_bar_of(labels)
    assert accuracy >= bar, f"served accuracy {accuracy:.3f} on {len(labels)} validation files is within chance (bar {bar:.3f})"
    return accuracy
