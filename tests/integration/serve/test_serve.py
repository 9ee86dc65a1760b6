"""Real HTTP against a real local Ray Serve: labels, batching, tiers, bad input, API key."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import soundfile

from tests.helpers.configs import tiny_config_in
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.ports import free_port as _free_port
from tests.helpers.serving import FAST, _b64, _checkpoint, _png
from raylm.config import ConfigError

pytestmark = pytest.mark.integration

TEST_CPUS = ("serve.replica_cpus=0.3", "serve.max_replicas=1",
             "serve.graceful_shutdown_timeout_s=1")
API_KEY_ENV = "RAYLM_TEST_SERVE_KEY"


@pytest.fixture(scope="module")
def served(data_root, tmp_path_factory):
    """Three applications (text with two tiers, image, audio behind an API key) on one Serve."""
    import os

    from ray import serve

    from raylm.artifacts import load_artifact
    from raylm.compress import compress
    from raylm.runtime import ensure_ray
    from raylm.serve import build_app, load_serve_config

    ensure_ray(num_cpus=2, configure_logging=False)
    root = tmp_path_factory.mktemp("serve")
    labels = {"text": ["neg", "pos"], "image": ["horizontal", "vertical"], "audio": ["high", "low"]}
    artifacts: dict[str, str] = {}
    for modality, mode in (("text", "none"), ("text", "dynamic"), ("image", "none"), ("audio", "none")):
        cfg = tiny_config_in(root, data_root, modality, f"task.labels=[{','.join(labels[modality])}]",
                             f"train.name={modality}", f"compress.quantize.mode={mode}", *FAST)
        checkpoint = cfg.run_dir / "train" / "checkpoint_untrained"
        parent = str(checkpoint) if checkpoint.exists() else _checkpoint(cfg, labels[modality])
        artifacts[f"{modality}-{mode}"] = compress(cfg, parent, verbose=False)["artifact"]

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    os.environ[API_KEY_ENV] = "s3cret"
    apps = {
        "text": build_app([f"fp32={artifacts['text-none']}", f"int8={artifacts['text-dynamic']}"],
                          load_serve_config(None, [*TEST_CPUS, "serve.max_batch_size=8", "serve.batch_wait_timeout_s=0.25",
                                                   "serve.max_text_chars=200", "serve.max_payload_bytes=4096"])),
        "image": build_app([artifacts["image-none"]], load_serve_config(None, list(TEST_CPUS))),
        "audio": build_app([artifacts["audio-none"]], load_serve_config(None, [*TEST_CPUS, f"serve.api_key_env={API_KEY_ENV}"])),
    }
    # Deployed together: their replicas start side by side, not one app after another (#27 budget).
    serve.run_many([serve.RunTarget(app, name=name, route_prefix=f"/{name}") for name, app in apps.items()])
    yield {"url": f"http://127.0.0.1:{port}", "artifacts": artifacts, "load": load_artifact}
    serve.shutdown()


def _softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _direct(served, key: str, feeds) -> np.ndarray:
    return _softmax(served["load"](served["artifacts"][key]).predict(feeds).astype(np.float64))


def _wav(freq: float) -> bytes:
    t = np.arange(4000) / 8000
    buf = io.BytesIO()
    soundfile.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, format="WAV")
    return buf.getvalue()


def _post(served, app: str, body=None, *, raw: bytes | None = None, headers=None) -> requests.Response:
    headers = dict(headers or {})
    if raw is not None:
        headers.setdefault("content-type", "application/json")
        return requests.post(f"{served['url']}/{app}/predict", data=raw, headers=headers, timeout=60)
    return requests.post(f"{served['url']}/{app}/predict", json=body, headers=headers, timeout=60)


def _probs(response) -> np.ndarray:
    body = response.json()
    labels = list(body["predictions"][0]["probabilities"])
    return np.array([[p["probabilities"][label] for label in labels] for p in body["predictions"]])


def test_each_modality_answers_like_the_artifact(served):
    from raylm.data.audio import decode_audio, mfcc_frames
    from raylm.data.images import decode_image
    from raylm.data.text import tokenize

    texts = ["the film was great and lovely", "awful terrible"]
    r = _post(served, "text", {"text": texts})
    assert r.status_code == 200, r.text
    assert r.json()["tier"] == "fp32" and len(r.json()["predictions"]) == 2
    meta = served["load"](served["artifacts"]["text-none"]).meta
    expected = _direct(served, "text-none", tokenize(texts, str(Path(served["artifacts"]["text-none"]) / "tokenizer"),
                                                     meta["preprocessing"]["max_length"]))
    np.testing.assert_allclose(_probs(r), expected, atol=1e-5)
    assert [p["label"] for p in r.json()["predictions"]] == [meta["labels"][i] for i in expected.argmax(-1)]

    png = _png("vertical")
    r = _post(served, "image", {"image": _b64(png)})
    assert r.status_code == 200, r.text
    size = served["load"](served["artifacts"]["image-none"]).meta["preprocessing"]["size"]
    np.testing.assert_allclose(_probs(r), _direct(served, "image-none", {"image": decode_image(png, size)[None]}), atol=1e-5)

    wav = _wav(2000.0)
    r = _post(served, "audio", {"audio": _b64(wav)}, headers={"x-api-key": "s3cret"})
    assert r.status_code == 200, r.text
    from raylm.config import AudioDataConfig

    settings = served["load"](served["artifacts"]["audio-none"]).meta["preprocessing"]
    cfg = AudioDataConfig(**{k: settings[k] for k in AudioDataConfig.model_fields})
    frames = mfcc_frames(decode_audio(wav, cfg.sample_rate, clip_seconds=cfg.clip_seconds), cfg)[None]
    np.testing.assert_allclose(_probs(r), _direct(served, "audio-none", {"frames": frames}), atol=1e-5)


def test_concurrent_requests_are_batched(served):
    texts = [f"the film was great {i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: _post(served, "text", {"text": t}), texts))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    sizes = [r.json()["batch_requests"] for r in responses]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 8  # serve.max_batch_size


def test_the_url_printed_is_where_the_running_serve_listens(served):
    """On a cluster whose Serve already runs, serve.port is ignored (Serve takes its HTTP options when it starts):
    `raylm serve --detach` printed port 8000 while the app was on the cluster's port."""
    from raylm.serve import load_serve_config
    from raylm.serve.lifecycle import serving_address

    port = int(served["url"].rsplit(":", 1)[1])
    assert serving_address(load_serve_config(None, ["serve.port=8000"])) == ("127.0.0.1", port)
    assert serving_address(load_serve_config(None, ["serve.port=8000", "serve.host=0.0.0.0"])) == ("127.0.0.1", port)


def test_a_dynamic_int8_tier_answers_each_text_as_if_alone(served):
    """Dynamic int8 scales activations over the whole batch: a text's label moved with its companions (a new
    user's 9 of 90 identical requests). A list, and texts merged by Serve's batching, answer as alone."""
    from raylm.data.text import tokenize

    texts = ["the film was great", "dreadful and poor", "an ok film, not great", "x" * 40, "the best of the year"]
    artifact = served["load"](served["artifacts"]["text-dynamic"])
    feeds = tokenize(texts, str(Path(artifact.path) / "tokenizer"), 16)
    alone = np.concatenate([artifact.runner.predict({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(len(texts))])
    assert not np.allclose(artifact.runner.predict(feeds), alone, atol=1e-6, rtol=0)  # the batch moves the answers
    np.testing.assert_array_equal(artifact.predict(feeds), alone)
    listed = _post(served, "text", {"text": texts, "tier": "int8"})
    assert listed.status_code == 200, listed.text
    np.testing.assert_allclose(_probs(listed), _softmax(alone), atol=1e-6)


def test_tier_selection_by_field_header_and_default(served):
    from raylm.data.text import tokenize

    text = "the film was dreadful and poor"
    feeds = tokenize([text], str(Path(served["artifacts"]["text-none"]) / "tokenizer"), 16)
    by_field = _post(served, "text", {"text": text, "tier": "int8"})
    by_header = _post(served, "text", {"text": text}, headers={"x-raylm-tier": "int8"})
    by_serve_header = _post(served, "text", {"text": text}, headers={"serve_multiplexed_model_id": "int8"})
    default = _post(served, "text", {"text": text})
    assert [r.json()["tier"] for r in (by_field, by_header, by_serve_header, default)] == ["int8", "int8", "int8", "fp32"]
    np.testing.assert_allclose(_probs(by_field), _direct(served, "text-dynamic", feeds), atol=1e-5)
    np.testing.assert_allclose(_probs(default), _direct(served, "text-none", feeds), atol=1e-5)
    unknown = _post(served, "text", {"text": text, "tier": "int4"})
    assert unknown.status_code == 422 and "int4" in unknown.json()["detail"]
    listing = requests.get(f"{served['url']}/text/models", timeout=30).json()
    assert [(t["tier"], t["default"]) for t in listing["tiers"]] == [("fp32", True), ("int8", False)]
    assert listing["tiers"][1]["report"]["variant"] == "int8-dynamic"
    assert requests.get(f"{served['url']}/text/healthz", timeout=30).json()["status"] == "ok"
    assert "/predict" in requests.get(f"{served['url']}/text/openapi.json", timeout=30).json()["paths"]


BAD_TEXT = [
    ("malformed json", None, b'{"text": "unterminated', 400, "malformed JSON"),
    ("missing field", {"tier": "fp32"}, None, 422, "text"),
    ("misspelled field", {"txt": "hello"}, None, 422, "txt"),
    ("wrong type", {"text": 42}, None, 422, "text"),
    ("not an object", ["hello"], None, 422, "JSON object"),
    ("empty text", {"text": ""}, None, 422, "text"),
    ("blank text", {"text": "   "}, None, 422, "empty text"),
    ("invisible text", {"text": "\u200b\u200b\u0001"}, None, 422, "only invisible or control characters"),
    ("empty list", {"text": []}, None, 422, "at least 1 item"),
    ("over-long text", {"text": "word " * 100}, None, 422, "max_text_chars"),
    ("oversized payload", {"text": ["word"] * 2000}, None, 413, "max_payload_bytes"),
]


@pytest.mark.parametrize("case, body, raw, status, reason", BAD_TEXT, ids=[c[0] for c in BAD_TEXT])
def test_bad_text_gets_its_4xx_and_the_next_request_succeeds(served, case, body, raw, status, reason):
    r = _post(served, "text", body, raw=raw)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert reason in str(r.json()["detail"])
    assert not re.search(r"constrained|list\[", str(r.json()["detail"])), r.text  # no pydantic type names
    assert _post(served, "text", {"text": "still serving"}).status_code == 200


@pytest.mark.parametrize("body, detail", [
    ({"text": 42}, "text: expected a string or a list of strings, got a number"),
    ({"text": ""}, "text: String should have at least 1 character"),
    ({"text": ["fine", ""]}, "text[1]: String should have at least 1 character"),
    ({"text": ["fine", 3]}, "text[1]: Input should be a valid string"),
    ({"text": None}, "text: expected a string or a list of strings, got null"),
    ({"txt": "hello"}, "text: Field required; txt: Extra inputs are not permitted"),
])
def test_request_errors_read_as_plain_sentences(body, detail):
    """Issue 20 item 6: no pydantic type names (``text.constrained-str: ...``) in a 422, one reason per
    thing the client got wrong, the field named once."""
    from pydantic import ValidationError

    from raylm.serve.schemas import request_error, request_model

    with pytest.raises(ValidationError) as err:
        request_model("text").model_validate(body)
    assert request_error(err.value, body) == detail


def test_undecodable_image_and_audio_get_422(served):
    key = {"x-api-key": "s3cret"}
    cases = [("image", {"image": "%%%not base64%%%"}, {}, "not valid base64"),
             ("image", {"image": _b64(b"GIF89a not really an image")}, {}, "not an image file of an accepted format"),
             ("image", {"image": [_b64(_png("vertical")), _b64(b"\x00" * 64)]}, {}, "image[1]"),
             ("audio", {"audio": _b64(b"RIFF\x00\x00\x00\x00WAVEjunk")}, key, "not a readable wav audio file"),
             ("audio", {"audio": 3.5}, key, "audio")]
    for app, body, headers, reason in cases:
        r = _post(served, app, body, headers=headers)
        assert r.status_code == 422 and reason in r.json()["detail"], (app, body, r.status_code, r.text)
        assert f"{app}: {app}:" not in r.json()["detail"], r.text  # the field is named once, as a sentence
    assert _post(served, "image", {"image": _b64(_png("horizontal"))}).status_code == 200
    assert _post(served, "audio", {"audio": _b64(_wav(300.0))}, headers=key).status_code == 200


def test_hostile_corpus_gets_4xx_with_reasons_and_never_5xx(served):
    statuses = []
    from tests.helpers.hostile import request_corpus

    for case, app, raw, headers, status, reason in request_corpus({"x-api-key": "s3cret"}):
        r = _post(served, app, raw=raw, headers=headers)
        statuses.append(r.status_code)
        assert r.status_code == status and reason in str(r.json()["detail"]), (case, r.status_code, r.text[:300])
        assert not re.search(r"0x[0-9a-f]{6,}", r.text), (case, r.text[:300])  # no heap addresses
    assert max(statuses) < 500
    assert _post(served, "image", {"image": _b64(_png("vertical"))}).status_code == 200
    assert _post(served, "audio", {"audio": _b64(_wav(300.0))}, headers={"x-api-key": "s3cret"}).status_code == 200


def test_models_listing_shows_no_server_paths(served):
    from raylm.report.runs import serving_state

    # `raylm runs` asks a recorded URL (an app's /predict) whether it still serves: a live app is up.
    assert serving_state(f"{served['url']}/image/predict", timeout_s=10) == "up"
    listing = requests.get(f"{served['url']}/image/models", timeout=30)
    assert listing.status_code == 200
    assert str(Path(served["artifacts"]["image-none"]).parent) not in listing.text


def test_a_tier_that_fails_to_load_fails_only_its_own_requests(served, tmp_path):
    """Two tiers in one batch, one whose files were damaged after deployment: its requests get 503
    with the reason, the other tier's requests in the same batch still get their predictions."""
    import shutil

    from ray import serve

    from raylm.serve import build_app, load_serve_config

    good, bad = tmp_path / "good", tmp_path / "bad"
    shutil.copytree(served["artifacts"]["image-none"], good)
    shutil.copytree(served["artifacts"]["image-none"], bad)
    app = build_app([f"good={good}", f"bad={bad}"], load_serve_config(None, [
        "serve.replica_cpus=0.1", "serve.max_replicas=1", "serve.graceful_shutdown_timeout_s=1",
        "serve.max_batch_size=8", "serve.batch_wait_timeout_s=0.5"]))
    serve.run(app, name="tiers", route_prefix="/tiers")
    try:
        model_file = bad / json.loads((bad / "artifact.json").read_text())["model_file"]
        model_file.write_bytes(model_file.read_bytes()[:-8] + bytes(8))
        bodies = [{"image": _b64(_png("vertical")), "tier": tier} for tier in ("good", "bad") * 4]
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda b: _post(served, "tiers", b), bodies))
        by_tier = {tier: [r.status_code for r, b in zip(responses, bodies) if b["tier"] == tier] for tier in ("good", "bad")}
        assert by_tier == {"good": [200] * 4, "bad": [503] * 4}, by_tier
        assert "could not be loaded" in responses[1].json()["detail"]
    finally:
        serve.delete("tiers")


def test_a_client_cycling_through_many_tiers_never_forces_a_reload(served, tmp_path):
    """Six tiers, requested in turn: each is loaded once and kept (an LRU smaller than the tier list
    reloaded an artifact on every request). Once every tier has answered, their files are damaged on
    disk: a reload would fail (503), a kept tier still answers."""
    import shutil

    from ray import serve

    from raylm.serve import build_app, load_serve_config

    names = [f"t{i}" for i in range(6)]
    for name in names:
        shutil.copytree(served["artifacts"]["image-none"], tmp_path / name)
    app = build_app([f"{name}={tmp_path / name}" for name in names], load_serve_config(None, [
        "serve.replica_cpus=0.1", "serve.max_replicas=1", "serve.graceful_shutdown_timeout_s=1", "serve.max_batch_size=1"]))
    serve.run(app, name="many", route_prefix="/many")
    try:
        body = {"image": _b64(_png("vertical"))}
        assert [_post(served, "many", dict(body, tier=name)).status_code for name in names] == [200] * 6
        for name in names:
            model_file = tmp_path / name / json.loads((tmp_path / name / "artifact.json").read_text())["model_file"]
            model_file.write_bytes(model_file.read_bytes()[:-8] + bytes(8))
        cycled = [_post(served, "many", dict(body, tier=name)) for name in names * 2]
        assert [r.status_code for r in cycled] == [200] * 12, [r.text[:200] for r in cycled if r.status_code != 200]
    finally:
        serve.delete("many")


def test_api_key_is_enforced_when_set(served):
    body = {"audio": _b64(_wav(300.0))}
    assert _post(served, "audio", body).status_code == 401
    assert _post(served, "audio", body, headers={"x-api-key": "wrong"}).status_code == 401
    assert requests.get(f"{served['url']}/audio/models", timeout=30).status_code == 401
    assert _post(served, "audio", body, headers={"x-api-key": "s3cret"}).status_code == 200
    assert _post(served, "text", {"text": "no key needed here"}).status_code == 200  # off by default


def test_bad_serving_config_is_a_clear_error(served, monkeypatch):
    from raylm.serve import app_builder, load_serve_config

    with pytest.raises(ConfigError, match="serve.max_batch_size"):
        load_serve_config(None, ["serve.max_batch_size=0"])
    with pytest.raises(ConfigError, match="/nonexistent: does not exist"):
        app_builder({"artifact": "/nonexistent"})
    with pytest.raises(ConfigError, match="differs from"):
        app_builder({"artifact": f"t={served['artifacts']['text-none']},i={served['artifacts']['image-none']}"})
    monkeypatch.delenv("RAYLM_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match="RAYLM_UNSET_KEY is not set"):
        app_builder({"artifact": served["artifacts"]["image-none"], "serve.api_key_env": "RAYLM_UNSET_KEY"})
    with pytest.raises(ConfigError, match="unknown argument"):
        app_builder({"artifact": served["artifacts"]["image-none"], "max_batch_size": "4"})


def test_cluster_serve_config_is_a_valid_serve_deploy_file():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from tests.helpers.paths import REPO as root
    schema = ServeDeploySchema.model_validate(yaml.safe_load((root / "cluster" / "serve-config.yaml").read_text()))
    assert schema.applications[0].import_path == "raylm.serve.app:app_builder"


def test_cli_rejects_bad_artifacts_before_starting_anything(served, capsys, tmp_path):
    """A damaged or missing listed file was found by the replica after Ray's start, and the console said
    only "Deploying application raylm failed"; the command now names the file before deploying anything."""
    import shutil

    from raylm.cli import main

    assert main(["serve", "--artifact", "/nonexistent"]) == 2
    assert "/nonexistent: does not exist" in capsys.readouterr().err
    checkpoint = tmp_path / "run" / "train" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "raylm.json").write_text("{}")
    assert main(["serve", "--artifact", str(checkpoint)]) == 2
    assert f"a training checkpoint, not an artifact; make one with raylm compress --checkpoint {checkpoint}" \
        in capsys.readouterr().err
    damaged, missing = tmp_path / "damaged", tmp_path / "missing"
    for copy in (damaged, missing):
        shutil.copytree(served["artifacts"]["image-none"], copy)
    model_file = json.loads((damaged / "artifact.json").read_text())["model_file"]
    (damaged / model_file).write_bytes((damaged / model_file).read_bytes()[:-8] + bytes(8))
    (missing / model_file).unlink()
    for copy, reason in ((damaged, "sha256"), (missing, "missing")):
        assert main(["serve", "--artifact", str(copy), "serve.port=1"]) == 2  # port 1: had it deployed, a config error
        err = capsys.readouterr().err
        assert f"--artifact: {copy / model_file}" in err and reason in err, err


def _timing(response) -> dict[str, float]:
    """The replica's Server-Timing header as {stage: ms}."""
    parts = (p.strip().split(";dur=") for p in response.headers["server-timing"].split(","))
    return {name: float(value) for name, value in parts}


def test_lone_requests_never_wait_for_a_batch_that_cannot_fill(served):
    # The text app waits up to 250 ms for a batch to fill, but only while other requests are on their way.
    # Measured, not declared: "queue" is the replica's own clock from the batch queue to the model
    # (its model time taken out). A build that waits for a lone request queues each >= 250 ms; the
    # median of five under half of that leaves room for a loaded machine's scheduling delays.
    lone = [_timing(_post(served, "text", {"text": f"only me {i}"})) for i in range(5)]
    assert [t["wait_limit"] for t in lone] == [0.0] * 5
    queued = sorted(t["queue"] for t in lone)
    assert queued[2] < 0.5 * 250, queued
    with ThreadPoolExecutor(16) as pool:
        crowd = list(pool.map(lambda i: _post(served, "text", {"text": f"one of many {i}"}), range(16)))
    assert all(r.status_code == 200 for r in crowd)
    assert {_timing(r)["wait_limit"] for r in crowd} <= {0.0, 250.0}
    assert max(r.json()["batch_requests"] for r in crowd) > 1
    listing = requests.get(f"{served['url']}/text/models", timeout=30).json()
    assert listing["batching"] == {"max_batch_size": 8, "batch_wait_timeout_s": 0.25}


def test_batching_is_chosen_from_the_artifacts_latency_curve():
    from raylm.serve import load_serve_config
    from raylm.serve.batching import choose_batching

    def meta(b1: float, b16: float) -> dict:
        return {"report": {"compressed": {"latency": {"batch_1": {"p50_ms": b1}, "batch_16": {"p50_ms": b16}}}}}

    auto = load_serve_config(None, [])
    size, wait, why = choose_batching(meta(2.0, 8.0), auto)  # 16 rows in 4x the time of one: batch
    assert (size, wait) == (16, 0.002) and "4.000x" in why
    size, wait, why = choose_batching(meta(1.0, 15.0), auto)  # 16 rows cost 15 single calls: do not wait for them
    assert (size, wait) == (1, 0.0) and "1.066x" in why
    # Just under the bar reads under it (at two decimals 1.2497 read "1.25x rows/s < 1.25x").
    assert "1.250x rows/s < 1.25x" not in choose_batching(meta(1.0, 16 / 1.2497), auto)[2]
    assert "1.250x rows/s >= 1.25x" in choose_batching(meta(1.0, 16 / 1.2501), auto)[2]
    size, wait, why = choose_batching(meta(1.0, 15.0), load_serve_config(None, ["serve.max_batch_size=4"]))
    assert (size, wait) == (4, 0.0) and "max_batch_size=4" in why
    assert choose_batching({"report": {}}, auto)[:2] == (16, 0.005)


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("app, modality", [("text", "Text"), ("image", "Image"), ("audio", "Audio")])
def test_openapi_document_is_valid_and_every_ref_resolves(served, app, modality):
    from openapi_spec_validator import validate

    doc = requests.get(f"{served['url']}/{app}/openapi.json", timeout=30).json()
    validate(doc)
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": f"#/components/schemas/{modality}Request"}
    assert app in doc["components"]["schemas"][f"{modality}Request"]["required"]
    assert "/v2/models/{name}/infer" in doc["paths"]
    assert requests.get(f"{served['url']}/{app}/docs", timeout=30).status_code == 200


@pytest.mark.parametrize("app", ["text", "image", "audio"])
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer_in_predict(served, app, tmp_path):
    import shutil
    import subprocess

    command = [shutil.which("schemathesis") or "schemathesis", "run", f"{served['url']}/{app}/openapi.json",
               "--url", f"{served['url']}/{app}", "--include-path", "/predict", "--max-examples", "25",
               "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
               "--generation-deterministic", "--report-dir", str(tmp_path)]
    if app == "audio":
        command += ["--header", "x-api-key: s3cret"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Tested: 1" in run.stdout, run.stdout[-4000:]


def test_open_inference_protocol_with_tritons_client(served):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from raylm.data.images import decode_image
    from raylm.data.text import tokenize

    host = served["url"].removeprefix("http://")
    text = triton.InferenceServerClient(url=f"{host}/text")
    assert text.is_server_live() and text.is_server_ready()
    assert text.is_model_ready("int8") and text.is_model_ready("fp32")
    meta = text.get_model_metadata("int8")
    assert meta["platform"] == "onnxruntime_onnx" and text.get_model_metadata("fp32")["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]

    texts = ["the film was great and lovely", "awful terrible"]
    feeds = tokenize(texts, str(Path(served["artifacts"]["text-none"]) / "tokenizer"), 16)
    for binary in (True, False):  # the binary tensor extension (the client's default) and plain JSON
        tensor = triton.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
        for tier, key in (("fp32", "text-none"), ("int8", "text-dynamic")):
            result = text.infer(tier, [tensor])
            expected = _direct(served, key, feeds)
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
            labels = served["load"](served["artifacts"][key]).labels
            # JSON answers come back as str, binary ones as bytes
            got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
            assert got == [labels[i] for i in expected.argmax(-1)]

    image = triton.InferenceServerClient(url=f"{host}/image")
    png = _png("horizontal")
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png], dtype=object))
    tier = requests.get(f"{served['url']}/image/models", timeout=30).json()["tiers"][0]["tier"]
    size = served["load"](served["artifacts"]["image-none"]).meta["preprocessing"]["size"]
    np.testing.assert_allclose(image.infer(tier, [tensor], outputs=[triton.InferRequestedOutput("probabilities")])
                               .as_numpy("probabilities"),
                               _direct(served, "image-none", {"image": decode_image(png, size)[None]}), atol=1e-5)

    audio = triton.InferenceServerClient(url=f"{host}/audio")
    clip = triton.InferInput("audio", [1], "BYTES")
    clip.set_data_from_numpy(np.array([_wav(300.0)], dtype=object))
    audio_tier = requests.get(f"{served['url']}/audio/models", headers={"x-api-key": "s3cret"}, timeout=30).json()["tiers"][0]["tier"]
    assert audio.infer(audio_tier, [clip], headers={"x-api-key": "s3cret"}).as_numpy("probabilities").shape == (1, 2)

    bad = triton.InferInput("txt", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"hello"], dtype=object))
    cases = [(lambda: text.infer("int4", [tensor]), "int4"), (lambda: text.infer("int8", [bad]), "txt"),
             (lambda: image.infer(tier, [_bytes_input("image", b"GIF89a no image")]), "not an image file of an accepted format"),
             (lambda: audio.infer(audio_tier, [clip]), "API key")]
    for call, reason in cases:
        with pytest.raises(InferenceServerException, match=reason) as err:
            call()
        assert err.value.status() in ("400", "401", "404"), err.value.status()
    raw = requests.post(f"{served['url']}/text/v2/models/int8/infer", data=b'{"inputs": [', timeout=30)
    assert raw.status_code == 400 and "error" in raw.json()


def _bytes_input(name: str, data: bytes):
    import tritonclient.http as triton

    tensor = triton.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    return tensor


def test_serve_reads_the_serve_section_of_any_run_yaml(tmp_path):
    """``raylm serve --config`` takes a sweep's or a pipeline's YAML too (their tune/pipeline sections
    are not serving's business), and still refuses a section no raylm config has."""
    from raylm.serve import load_serve_config

    configs = CONFIGS
    assert load_serve_config(str(configs / "image_tune.yaml"), []).max_replicas == 2
    assert load_serve_config(str(configs / "keras_image.yaml"), ["serve.max_replicas=3"]).max_replicas == 3
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text("serving:\n  max_replicas: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['serving'\]"):
        load_serve_config(str(bogus), [])


@pytest.mark.parametrize("ingress", ["auto", pytest.param("haproxy", marks=pytest.mark.slow)])
def test_sigterm_under_load_drains_in_flight_requests_and_exits_0(served, tmp_path, ingress):
    """Issue 25: a real SIGTERM to a real ``raylm serve`` (its own embedded Ray) while keep-alive clients post:
    every request sent before the signal is answered 200, none after it gets an HTTP error, the process exits 0 with one line and no
    Ray stack dump, the Ray it started is gone, and its console holds no line from Ray's loggers.
    ``haproxy`` (opt-in, slow): the drain closes HAProxy's door and waits for the requests in flight
    (raylm/serve/front_door.py), beside the test session's own Ray (ports of its own)."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    import psutil

    from tests.helpers.cli import RAY_LINE

    port, limit_s = _free_port(), 10
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    url = f"http://127.0.0.1:{port}/predict"
    body = {"image": [_b64(_png("vertical"))] * 16}

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "raylm.cli", "serve", "--artifact", served["artifacts"]["image-none"],
             "--log-dir", str(tmp_path / "logs"), f"serve.port={port}", "serve.replica_cpus=0.3", "serve.max_replicas=1",
             f"serve.graceful_shutdown_s={limit_s}", f"serve.ingress={ingress}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def haproxy_dirs() -> set[str]:  # each embedded Ray's HAProxy files (raylm/runtime.py _haproxy_session_env)
        import glob
        import tempfile

        return set(glob.glob(os.path.join(tempfile.gettempdir(), "raylm-haproxy-*")))

    dirs_before = haproxy_dirs()
    proc, retried = start(), False
    try:
        deadline = time.monotonic() + 300
        while True:  # up once the app answers
            if proc.poll() is not None and not retried:
                # On an overloaded machine Ray 2.60's raylet can give up starting (ray-project/ray#65983): once more.
                assert "raylet failed to start" in proc.communicate()[1], proc.communicate()
                proc, retried = start(), True
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
            try:
                if requests.post(url, json=body, timeout=30).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the replica still starting
                pass
            time.sleep(0.5)

        ended = threading.Event()
        results: list[tuple[float, float, object]] = []  # (sent, answered, status code or error)

        def client() -> None:
            # Keep-alive, as integrated clients are (a Session reuses its connection), and on after the signal
            # until the process is gone: a drain must also end connections that stay open between requests.
            session = requests.Session()
            while not ended.is_set():
                sent = time.monotonic()
                try:
                    outcome: object = session.post(url, json=body, timeout=60).status_code
                except requests.RequestException as err:
                    outcome = type(err).__name__
                    time.sleep(0.05)
                results.append((sent, time.monotonic(), outcome))

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        while len(results) < 40:  # the load is on
            time.sleep(0.05)
        at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=limit_s + 60)
        finally:
            ended.set()
            for thread in clients:
                thread.join(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped_after = time.monotonic() - at
    in_flight = [outcome for sent, answered, outcome in results if sent < at < answered]
    print(f"SIGTERM under load: {len(in_flight)} requests in flight, {sum(sent < at for sent, _, _ in results)} sent "
          f"before it, exit {proc.returncode} within {stopped_after:.1f} s: {stdout.strip().splitlines()[-1:]}")
    assert in_flight, "no request was in flight when the signal came: the test proved nothing"
    failed = [outcome for sent, _, outcome in results if sent < at and outcome != 200]
    assert not failed, (failed, stderr[-2000:])
    # Sent after the signal: answered, or the connection refused or closed (a client retries elsewhere); never an
    # HTTP error such as the 404 of a removed route, which says the model does not exist.
    after = [outcome for sent, _, outcome in results if sent >= at]
    assert not [outcome for outcome in after if isinstance(outcome, int) and outcome != 200], after
    assert 200 in after or not after, after  # the door stayed open a moment for requests already on their way
    assert proc.returncode == 0, (stdout[-2000:], stderr[-3000:])
    assert "SIGTERM received" not in stderr and "logging.cc" not in stderr, stderr[-3000:]
    # its HAProxy directory went with it (`raylm serve` ends in os._exit, which runs no atexit handler: one was left per run)
    assert not haproxy_dirs() - dirs_before, haproxy_dirs() - dirs_before
    last = stdout.strip().splitlines()[-1]
    # "finished": every request was done before the limit, keep-alive connections included (HAProxy's stopped
    # frontend closes them after their answer; a paused one let them post until the limit ran out).
    assert last.startswith("raylm serve: SIGTERM: stopped taking requests; in-flight requests finished") \
        and last.endswith("Ray shut down"), stdout
    console = (stdout + stderr).splitlines()
    assert not [line for line in console if RAY_LINE.search(line)], console
    assert f"Ray's logs: {tmp_path / 'logs' / 'ray.log'}" in stderr
    session = json.loads((tmp_path / "logs" / "ray_session.json").read_text())
    name = Path(session["session_dir"]).name

    def ray_processes() -> list[int]:
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            if any(name in part for part in (p.info["cmdline"] or [])):
                found.append(p.info["pid"])
        return found

    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(), "the Ray that raylm serve started outlived it"


def test_sigterm_to_the_process_group_during_the_deploy_ends_it_with_a_line_and_frees_the_port(served, tmp_path):
    """A stop signal to the whole group (a terminal's, systemd's) while `raylm serve` deploys also ends the GCS and
    raylet it started: the deploy then waited ~60 s on them, exited 1 with a stack, and a second Ctrl-C left Serve's
    HAProxy holding the port. Now: either the deploy finished first and the app drains (exit 0), or the watch sees
    Ray's own processes gone and says so (exit 1); the port is free after, nothing of its Ray is left."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "raylm.cli", "serve", "--artifact", served["artifacts"]["image-none"],
         "--log-dir", str(tmp_path / "logs"), f"serve.port={port}", "serve.replica_cpus=0.3", "serve.max_replicas=1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, seen = time.monotonic() + 300, ""
        while "raylm serve: ingress" not in seen:  # Ray is up, the deploy begins
            assert time.monotonic() < deadline and proc.poll() is None, seen[-3000:]
            seen += proc.stderr.readline()
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = seen + stderr
    drained = "raylm serve: SIGTERM: stopped taking requests" in stdout
    if not drained:
        assert proc.returncode == 1, (stdout[-2000:], stderr[-3000:])
        assert ("raylm serve: SIGTERM during start-up ended this process's Ray too (its GCS and raylet); nothing was "
                "serving yet") in stderr, stderr[-3000:]
    else:
        assert proc.returncode == 0, (stdout[-2000:], stderr[-3000:])
    print("drained" if drained else "start-up stopped")
    deadline = time.monotonic() + 30
    while True:  # nothing listens on the port any more (HAProxy was left on it)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.monotonic() < deadline, f"something still listens on {port}"
        time.sleep(0.5)
