"""Each rule of the typed config (raylm/config/), word for word: the refusal names the field and says
what to change; the values just inside a bound are accepted; derived values (shapes, worker ranges,
ingress) computed from the fields."""

from __future__ import annotations

import pytest

from raylm.config import ConfigError, load_config, parse_overrides

BASE = ["task.modality=image", "model.name=seed_cnn"]


def _cfg(*overrides: str):
    return load_config(None, BASE + list(overrides))


def _refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        _cfg(*overrides)
    return str(err.value)


def _one_line(*overrides: str) -> str:
    text = _refusal(*overrides)
    head, line = text.split("\n")
    assert head == "invalid raylm config:"
    return line


@pytest.mark.parametrize("overrides, line", [
    (["augment.image.crop_scale_min=0.8", "augment.image.crop_scale_max=0.7"],
     "  augment.image: Value error, crop_scale_min (0.8) must be <= crop_scale_max (0.7)"),
    (["augment.audio.snr_db_min=31", "augment.audio.snr_db_max=30"],
     "  augment.audio: Value error, snr_db_min (31.0) must be <= snr_db_max (30.0)"),
    (["data.limits.min_sample_rate=8001", "data.limits.max_sample_rate=8000"],
     "  data.limits: Value error, min_sample_rate (8001) exceeds max_sample_rate (8000)"),
    (["task.labels=[a]"], "  task.labels: Value error, needs at least 2 labels (got ['a'])"),
    (["task.labels=[a, b, a]"], "  task.labels: Value error, labels must be distinct (got ['a', 'b', 'a'])"),
    (["train.num_workers=[3, 2]"], "  train.num_workers: Value error, [min, max]: min 3 exceeds max 2 (got [3, 2])"),
    (["train.num_workers=[0, 2]"],
     "  train.num_workers: Value error, Input should be greater than or equal to 1 (got [0, 2])"),
    (["data.block_mib=128", "data.stream_memory=255"],
     "  data.stream_memory: Value error, 255 MB holds fewer than two blocks of data.block_mib (128 MiB); give at "
     "least twice the block size, or a share of the object store (<= 1)"),
    (["data.block_mib=64", "data.stream_memory=127"],
     "  data.stream_memory: Value error, 127 MB holds fewer than two blocks of data.block_mib (64 MiB); give at "
     "least twice the block size, or a share of the object store (<= 1)"),
    (["serve.min_replicas=3", "serve.max_replicas=2"],
     "  serve.min_replicas=3 exceeds serve.max_replicas=2"),
    (["serve.graceful_shutdown_s=5", "serve.graceful_shutdown_timeout_s=5.5"],
     "  serve.graceful_shutdown_timeout_s=5.5 exceeds serve.graceful_shutdown_s=5"),
    (["serve.shadow=b", "serve.canary={tier: b, percent: 10}"],
     "  serve.shadow='b' is also serve.canary.tier: a canary's answers would be compared with "
     "themselves"),
    (["tracking.mlflow.uri=ftp://x"],
     "  tracking.mlflow.uri: Value error, must be a URI with one of the schemes http, https, databricks, file, sqlite, "
     "postgresql, mysql, mssql (e.g. http://127.0.0.1:5000) (got 'ftp://x')"),
    (["tracking.mlflow.uri=localhost"],
     "  tracking.mlflow.uri: Value error, must be a URI with one of the schemes http, https, databricks, file, sqlite, "
     "postgresql, mysql, mssql (e.g. http://127.0.0.1:5000) (got 'localhost')"),
    (["tracking.mlflow.experiment='  '"], "  tracking.mlflow.experiment: Value error, must not be empty (got '  ')"),
    (["tracking.mlflow.model_name=a/b"],
     "  tracking.mlflow.model_name: Value error, must be letters, digits, '.', '_' and '-' (it becomes "
     "models:/<name>/<version>) (got 'a/b')"),
    (["tune.objectives=[]"], "  tune.objectives: Value error, needs at least one objective (got [])"),
    (["tune.objectives=[accuracy, size_mb, accuracy]"],
     "  tune.objectives: Value error, repeats an objective: ['accuracy', 'size_mb', 'accuracy']"),
    (["tune.space={train.lr: {uniform: [0.01]}}"],  # was "tune.space.train.lr.uniform.1: Field required"
     "  tune.space.train.lr: Value error, uniform: needs [low, high], got [0.01]"),
    (["tune.space={train.lr: {uniform: [0.1, 0.1]}}"],
     "  tune.space.train.lr: Value error, uniform: low=0.1 must be below high=0.1"),
    (["tune.space={train.lr: {loguniform: [0, 0.1]}}"],
     "  tune.space.train.lr: Value error, loguniform: low=0.0 must be > 0"),
    (["tune.space={train.lr: {choice: []}}"], "  tune.space.train.lr: Value error, choice: needs at least one value"),
    (["tune.space={train.lr: {grid: []}}"], "  tune.space.train.lr: Value error, grid: needs at least one value"),
    (["tune.space={train.lr: {}}"],
     "  tune.space.train.lr: Value error, give exactly one of uniform, loguniform, randint, choice, grid (got none)"),
    (["tune.space={train.lr: {choice: [1], grid: [2]}}"],
     "  tune.space.train.lr: Value error, give exactly one of uniform, loguniform, randint, choice, grid "
     "(got ['choice', 'grid'])"),
    (["tune.search=optuna", "tune.space={train.lr: {choice: [1]}, train.epochs: {grid: [1, 2]}}"],
     "  tune.space.train.epochs: grid dimensions need tune.search=random (Optuna samples; "
     "use choice)"),
])
def test_each_rule_refuses_with_its_own_words(overrides, line):
    assert _one_line(*overrides) == line


@pytest.mark.parametrize("overrides", [
    ["augment.image.crop_scale_min=0.7", "augment.image.crop_scale_max=0.7"],
    ["augment.audio.snr_db_min=30", "augment.audio.snr_db_max=30"],
    ["data.limits.min_sample_rate=8000", "data.limits.max_sample_rate=8000"],
    ["task.labels=[a, b]"],
    ["data.stream_memory=256"], ["data.stream_memory=1"], ["data.block_mib=64", "data.stream_memory=128"],
    ["serve.min_replicas=2", "serve.max_replicas=2", "serve.graceful_shutdown_s=5", "serve.graceful_shutdown_timeout_s=5"],
    ["serve.shadow=a", "serve.canary={tier: b, percent: 10}"],
    ["tune.space={train.lr: {uniform: [0.1, 0.2]}, train.batch_size: {randint: [8, 9]}}"],
    ["tune.search=optuna", "tune.space={train.lr: {loguniform: [0.001, 0.1]}}"],
])
def test_values_just_inside_each_rule_are_accepted(overrides):
    _cfg(*overrides)


def test_shapes_and_worker_ranges_come_from_the_fields():
    cfg = _cfg("data.image.size=24", "data.text.max_length=12", "data.audio.sample_rate=8000",
               "data.audio.clip_seconds=0.5", "data.audio.hop_length=128", "data.audio.n_mfcc=13")
    assert cfg.data.image.sample_shape == (24, 24, 3)
    assert cfg.data.text.sample_shape == (12,)
    assert cfg.data.audio.frames == 1 + 4000 // 128 and cfg.data.audio.sample_shape == (32, 13)
    assert _cfg("data.audio.sample_rate=8000", "data.audio.clip_seconds=0.06", "data.audio.hop_length=32").data.audio.frames == 16
    one, span, same = (_cfg(f"train.num_workers={v}").train for v in ("3", "[1, 4]", "[2, 2]"))
    assert (one.num_workers, one.min_workers, one.max_workers) == (3, 3, 3)
    assert (span.num_workers, span.min_workers, span.max_workers) == ((1, 4), 1, 4)
    assert same.num_workers == 2 and (same.min_workers, same.max_workers) == (2, 2)
    assert _cfg("serve.graceful_shutdown_s=7").serve.replica_shutdown_s() == 7
    assert _cfg("serve.graceful_shutdown_s=7", "serve.graceful_shutdown_timeout_s=0").serve.replica_shutdown_s() == 0


def test_paths_are_resolved_and_missing_ones_named(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert _cfg("data.path=data").data.path == str(tmp_path / "data")
    assert _cfg("data.path=s3://bucket/data").data.path == "s3://bucket/data"  # checked when read
    assert _one_line(f"data.path={tmp_path / 'absent'}") == (
        f"  data.path: Value error, no such file or directory: {tmp_path / 'absent'}")  # the path once
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _cfg("data.validation_path=~/data").data.validation_path == str(tmp_path / "data")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert _one_line(f"train.resume_from={ckpt}") == (
        f"  train.resume_from: Value error, not a raylm checkpoint (no raylm.json): {ckpt}")
    (ckpt / "raylm.json").write_text("{}")
    assert _cfg("train.resume_from=ckpt").train.resume_from == str(ckpt)
    assert _cfg("train.resume_from=s3://bucket/ckpt").train.resume_from == "s3://bucket/ckpt"
    # A path given on top of a config's demo set replaces it.
    assert _cfg("data.name=digits", "data.path=data").data.name is None
    assert _cfg("data.name=digits").data.name == "digits"


def test_object_storage_is_checked_before_ray_starts():
    assert _cfg("train.storage_path=s3://bucket/runs").train.storage_path == "s3://bucket/runs"
    assert _one_line("train.storage_path=s3:///runs") == (
        "  train.storage_path: 's3:///runs' names no bucket (s3://<bucket>/<prefix>)")
    assert "train.resume_from" in _one_line("train.resume_from=s3:///ckpt")
    assert _one_line("train.storage_options={region: x}") == (
        "  train.storage_options: only for a URI train.storage_path (s3://, gs://)")
    assert "train.storage_options" in _one_line("train.storage_path=s3://bucket/runs", "train.storage_options={nonsense_key: 1}")


def test_mlflow_uris_keep_their_scheme_and_lose_a_trailing_slash():
    assert _cfg("tracking.mlflow.uri=http://h:5000/").tracking.mlflow.uri == "http://h:5000"
    assert _cfg("tracking.mlflow.uri=HTTPS://h").tracking.mlflow.uri == "HTTPS://h"
    assert _cfg("tracking.mlflow.uri=postgresql+psycopg2://u@h/db").tracking.mlflow.uri == "postgresql+psycopg2://u@h/db"
    assert _cfg("tracking.mlflow.model_name=m.v_1-a").tracking.mlflow.model_name == "m.v_1-a"
    assert _cfg().tracking.mlflow.uri is None


def test_a_search_dimension_knows_its_kind_and_values():
    space = _cfg("tune.space={train.lr: {loguniform: [0.001, 0.1]}, train.batch_size: {choice: [8, 16]}}").tune.space
    assert (space["train.lr"].kind, space["train.lr"].values) == ("loguniform", (0.001, 0.1))
    assert (space["train.batch_size"].kind, space["train.batch_size"].values) == ("choice", [8, 16])


PBT = ["tune.scheduler=pbt", "train.num_workers=1", "train.epochs=4"]


@pytest.mark.parametrize("overrides, line", [
    (["tune.space={model.name: {choice: [seed_cnn]}}"],
     "  tune.space.model.name: tune.scheduler=pbt copies a donor trial's weights into others mid-training, so "
     "model.name must be the same for the whole population (mutable: augment.*, train.lr, train.weight_decay, "
     "train.batch_size, compress.*)"),
    (["tune.space={train.lrx: {choice: [1]}}"], None),  # train.lr is a key, not a prefix of train.lrx
    (["tune.scheduler=pb2", "tune.space={train.lr: {choice: [0.1, 0.2]}}"],
     "  tune.space.train.lr: tune.scheduler=pb2 takes bounds (uniform, loguniform, randint), not choice"),
    (["tune.space={train.lr: {grid: [0.1, 0.2]}}"],
     "  tune.space: tune.scheduler=pbt needs at least one mutable key with a distribution (uniform, loguniform, "
     "randint, choice; grid values are never mutated), e.g. augment.image.rotate_p: {uniform: [0, 1]}"),
    (["tune.space={train.lr: {uniform: [0.1, 0.2]}}", "tune.perturbation_interval=5"],
     "  tune.perturbation_interval: 5 epochs is longer than train.epochs=4: no trial would ever be perturbed "
     "(none is at a trial's last epoch; the sweep would be a random search)"),
    (["tune.space={train.lr: {uniform: [0.1, 0.2]}}", "tune.perturbation_interval=4"],  # none at the last epoch
     "  tune.perturbation_interval: 4 epochs is as long as train.epochs=4: no trial would ever be perturbed "
     "(none is at a trial's last epoch; the sweep would be a random search)"),
    (["tune.space={train.lr: {uniform: [0.1, 0.2]}}", "tune.search=optuna"],
     "  tune.search: optuna proposes whole trials; tune.scheduler=pbt evolves its population itself (use "
     "tune.search=random)"),
    (["tune.space={train.lr: {uniform: [0.1, 0.2]}}", "train.storage_path=s3://bucket/runs"],
     "  train.storage_path: tune.scheduler=pbt hands checkpoints between trials on local storage (or a shared mount) "
     "only, not object storage yet"),
    (["tune.space={train.lr: {uniform: [0.1, 0.2]}}", "train.num_workers=2"],
     "  train.num_workers: tune.scheduler=pbt runs trials that train in their own process (one CPU worker: "
     "train.num_workers=1, train.use_gpu false/auto); multi-worker trials cannot hand a checkpoint to Tune "
     "mid-sweep yet"),
    (["tune.space={train.lr: {uniform: [0.1, 0.2]}}", "train.use_gpu=true"], "train.num_workers: "),
])
def test_population_sweeps_refuse_what_they_cannot_evolve(overrides, line):
    if line is None:
        assert "tune.space.train.lrx" in _one_line(*PBT, *overrides)
    elif line.endswith(": "):
        assert _one_line(*PBT, *overrides).startswith("  " + line)
    else:
        assert _one_line(*PBT, *overrides) == line


def test_population_sweeps_that_can_evolve_are_accepted():
    for space in ("{train.lr: {uniform: [0.1, 0.2]}, augment.image.rotate_p: {choice: [0, 1]}}",
                  "{train.lr: {uniform: [0.1, 0.2]}, compress.prune.sparsity: {grid: [0.0]}}"):
        _cfg(*PBT, f"tune.space={space}", "tune.perturbation_interval=3", "train.storage_path=file:///tmp/x")
    _cfg(*PBT[1:], "tune.scheduler=pb2", "tune.space={train.weight_decay: {loguniform: [0.0001, 0.1]}}")
    _cfg("tune.scheduler=asha", "tune.space={model.name: {choice: [seed_cnn]}}")  # not a population
    _cfg("tune.scheduler=pbt")  # no space: a trial's own config


def test_overrides_build_nested_trees_and_refuse_what_is_not_key_value():
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=", "f=[1, 2]"]) == {
        "a": {"b": {"c": 1, "d": "x"}}, "e": None, "f": [1, 2]}
    assert parse_overrides([" train.lr =0.1"]) == {"train": {"lr": 0.1}}
    for bad in ("train.lr", "=1", " =1"):
        with pytest.raises(ConfigError) as err:
            parse_overrides([bad])
        assert str(err.value) == f"override '{bad}' is not key=value (e.g. train.lr=3e-4)"
    with pytest.raises(ConfigError) as err:
        parse_overrides(["train.lr=1", "train.lr.x=2"])
    assert str(err.value) == "train.lr.x: 'lr' is a value, not a section"


def test_changes_merge_into_sections_and_replace_values():
    from raylm.config.root import merge

    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    assert merge(base, {"a": {"c": {"x": 3}}, "e": [2]}) == {"a": {"b": 1, "c": {"d": 2, "x": 3}}, "e": [2]}
    assert merge(base, {"a": 5}) == {"a": 5, "e": [1]}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}  # the base is not changed
    cfg = _cfg()
    assert cfg.override({"train.lr": 0.5, "data": {"image": {"size": 40}}}).data.image.size == 40
    assert cfg.override({"train.lr": 0.5}).train.lr == 0.5 and cfg.train.lr != 0.5


def test_a_validation_error_lists_every_field_with_what_it_got():
    text = _refusal("train.lr=-1", "train.epochs=x", "train.bogus=1")
    assert text.split("\n") == [
        "invalid raylm config:",
        "  train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'x')",
        "  train.lr: Input should be greater than 0 (got -1)",
        "  train.bogus: Extra inputs are not permitted (got 1)",
    ]
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.name=seed_cnn"])
    assert str(err.value) == "invalid raylm config:\n  task: Field required"


def test_config_files_that_cannot_be_read_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "absent.yaml")
    assert str(err.value) == f"--config: no such file: {tmp_path / 'absent.yaml'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"--config: {bad} is not valid YAML: ")
    bad.write_text("- a\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value) == f"--config: {bad} must hold a mapping of sections"
    good = tmp_path / "good.yaml"
    good.write_text("task: {modality: image}\nmodel: {name: seed_cnn}\ntrain: {lr: 0.2, epochs: 3}\n")
    cfg = load_config(good, ["train.lr=0.3"])
    assert (cfg.train.lr, cfg.train.epochs) == (0.3, 3)


def test_the_ingress_a_nodes_environment_selects():
    from raylm.config.serve import ingress_of

    assert ingress_of({}) == "proxy"
    assert ingress_of({"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}) == "haproxy"
    assert ingress_of({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}) == "direct"
    assert ingress_of({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}) == "direct"
    assert ingress_of({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}) == \
        "proxy (throughput-optimized)"
    assert ingress_of({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}) == "proxy"


def test_plain_names_only():
    from raylm.config.section import plain_name

    for ok in ("run-1", "a.b_c", "0", "x" * 128):
        assert plain_name(ok) == ok
    for bad in (".hidden", "a/b", "..", "", "x" * 129, "a b"):
        with pytest.raises(ValueError) as err:
            plain_name(bad)
        assert str(err.value) == ("must be a plain directory name of letters, digits, '.', '_' and '-', "
                                  "not starting with '.'")


def test_serves_settings_as_ray_serve_takes_them():
    serve = _cfg("serve.host=0.0.0.0", "serve.port=8123", "serve.request_timeout_s=12", "serve.min_replicas=0",
                 "serve.max_replicas=3", "serve.target_ongoing_requests=4", "serve.upscale_delay_s=1",
                 "serve.downscale_delay_s=30", "serve.look_back_period_s=6").serve
    assert serve.http_options() == {"host": "0.0.0.0", "port": 8123, "request_timeout_s": 12}
    # A window under 20 s: Serve must be sent metrics every half window (3 s), or it warns and averages one report.
    assert serve.metrics_interval_s() == 3
    assert serve.autoscaling_config() == {
        "min_replicas": 0, "max_replicas": 3, "initial_replicas": 1, "target_ongoing_requests": 4,
        "upscale_delay_s": 1, "downscale_delay_s": 30, "look_back_period_s": 6, "metrics_interval_s": 3}
    default = _cfg("serve.min_replicas=2", "serve.look_back_period_s=20").serve
    assert default.metrics_interval_s() == 10
    assert "metrics_interval_s" not in default.autoscaling_config()  # Serve's own 10 s: nothing to send
    assert default.autoscaling_config()["initial_replicas"] == 2
    assert _cfg("serve.look_back_period_s=30").serve.metrics_interval_s() == 10
