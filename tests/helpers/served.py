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


CLOSED_WITHOUT_RESPONSE = "closed without a response"
ANSWER_CUT_OFF = "answer cut off"  # the status line and headers came, the body broke off (requests' ChunkedEncodingError)


def _closed_without_response(err: BaseException) -> bool:
    """The server closed a kept-alive connection before any byte of the answer (http.client's RemoteDisconnected,
    inside urllib3's ProtocolError inside requests' ConnectionError): HTTP's sign that the request was not
    processed. Not a refused connection, a reset, a timeout or a cut-off answer."""
    import http.client

    stack = [err]
    while stack:
        e = stack.pop()
        if isinstance(e, http.client.RemoteDisconnected):
            return True
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return False


class LabelledLoad:
    """``concurrency`` HTTP clients posting the validation ``files`` one a request, each client cycling
    through them from its own offset, back to back until stopped. Every answer is kept as ``(sent at,
    status or the exception's name, seconds, file index, predicted label or None)``."""

    def __init__(self, url: str, files: list[tuple[Path, str]], concurrency: int, timeout_s: float):
        import threading

        self.url, self.files, self.concurrency, self.timeout_s = url, files, concurrency, timeout_s
        self.bodies = [image_body([p]) for p, _ in files]
        self.stop = threading.Event()
        self.answers: list[tuple[float, object, float, int, str | None]] = []
        self.lock = threading.Lock()
        self.clients = [threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(concurrency)]

    def _client(self, offset: int) -> None:
        import time

        import requests

        i = offset * len(self.files) // self.concurrency
        with requests.Session() as session:
            while not self.stop.is_set():
                index = i % len(self.files)
                sent, label = time.time(), None
                try:
                    response = session.post(self.url, json=self.bodies[index], timeout=self.timeout_s)
                    status = response.status_code
                    if status == 200:
                        label = response.json()["predictions"][0]["label"]
                except requests.RequestException as err:  # a dropped connection or a hang: not an HTTP status
                    status = (CLOSED_WITHOUT_RESPONSE if _closed_without_response(err) else
                              ANSWER_CUT_OFF if isinstance(err, requests.exceptions.ChunkedEncodingError) else
                              type(err).__name__)
                with self.lock:
                    self.answers.append((sent, status, time.time() - sent, index, label))
                i += 1

    def start(self) -> "LabelledLoad":
        for client in self.clients:
            client.start()
        return self

    def stop_and_join(self) -> None:
        self.stop.set()
        for client in self.clients:
            client.join(timeout=self.timeout_s + 10)
        assert not any(c.is_alive() for c in self.clients), "an HTTP client is still waiting past its timeout"

    def answered(self, after: float = 0.0) -> list[tuple[float, object, float, int, str | None]]:
        with self.lock:
            return [a for a in self.answers if a[1] == 200 and a[0] >= after]
