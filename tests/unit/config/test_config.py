from pathlib import Path

import pytest

from raylm.config import ConfigError, load_config, parse_overrides

from tests.helpers.paths import CONFIGS


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_example_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.task.modality in name
    assert cfg.train.name.startswith(cfg.task.modality)


def test_overrides_are_typed_and_nested():
    cfg = load_config(CONFIGS / "image.yaml", ["train.lr=3e-4", "train.use_gpu=false", "data.image.size=48"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.use_gpu is False
    assert cfg.data.image.size == 48
    assert parse_overrides(["task.labels=[a, b]"]) == {"task": {"labels": ["a", "b"]}}


def test_one_key_of_the_sweeps_space_is_overridden_by_its_dotted_path():
    """``tune.space.train.lr=...`` was split at every dot: "tune.space.train.lr: Extra inputs are not permitted"."""
    base = load_config(CONFIGS / "image_tune.yaml")
    cfg = load_config(CONFIGS / "image_tune.yaml", ["tune.space.train.lr={loguniform: [0.001, 0.01]}"])
    assert (cfg.tune.space["train.lr"].kind, tuple(cfg.tune.space["train.lr"].values)) == ("loguniform", (0.001, 0.01))
    assert set(cfg.tune.space) == set(base.tune.space) | {"train.lr"}  # the other keys stay
    assert parse_overrides(["tune.space.augment.image.rotate_p={uniform: [0, 1]}"]) == {
        "tune": {"space": {"augment.image.rotate_p": {"uniform": [0, 1]}}}}


def test_run_dir_is_under_storage_path(tmp_path):
    cfg = load_config(CONFIGS / "image.yaml", [f"train.storage_path={tmp_path}", "train.name=r1"])
    assert cfg.run_dir == tmp_path / "r1"


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.num_workers=0", "train.num_workers"),
        ("train.lr=-1", "train.lr"),
        ("train.epochs=two", "train.epochs"),
        ("train.bogus=1", "train.bogus"),
        ("data.validation_fraction=1.5", "data.validation_fraction"),
        ("data.path=/no/such/dir", "data.path"),
        ("model.name=nope", "model.name"),
        ("data.name=nope", "data.name"),
        ("train.resume_from=/no/such/checkpoint", "train.resume_from"),
        ("task.labels=[only_one]", "task.labels"),
        ("train.precision=fp8", "train.precision"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "image.yaml", [override])
    assert field in str(info.value)


def test_missing_section_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="task"):
        load_config(None, ["model.name=seed_cnn"])
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CONFIGS / "image.yaml", ["train.lr"])


def test_data_path_replaces_the_configs_demo_set(tmp_path, capsys):
    cfg = load_config(CONFIGS / "image.yaml", [f"data.path={tmp_path}"])  # the YAML also sets data.name
    assert cfg.data.path == str(tmp_path.resolve()) and cfg.data.name is None
    assert "replaces the demo dataset data.name=" in capsys.readouterr().err


def test_cosine_schedule_decays_from_lr_and_resumes_from_the_epoch_alone():
    from raylm.config import validate_config
    from raylm.train.loop import epoch_lr

    base = {"task": {"modality": "image"}, "model": {"name": "seed_cnn"}}
    cosine = validate_config(base | {"train": {"lr": 0.01, "epochs": 4, "lr_schedule": "cosine"}}).train
    lrs = [epoch_lr(cosine, e) for e in range(4)]
    assert lrs[0] == 0.01 and all(a > b > 0 for a, b in zip(lrs, lrs[1:]))
    assert lrs == [epoch_lr(cosine, e) for e in range(4)]  # no state: a resumed epoch gets the same lr
    constant = validate_config(base | {"train": {"lr": 0.01, "epochs": 4}}).train
    assert {epoch_lr(constant, e) for e in range(4)} == {0.01}
def test_override_and_from_saved_replace_hand_written_surgery():
    from raylm.config import RaylmConfig

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "data.path=.", "task.labels=[a,b]"])
    changed = cfg.override({"train.epochs": 7, "data.image": {"size": 24}})
    assert (changed.train.epochs, changed.data.image.size, cfg.train.epochs) == (7, 24, cfg.train.epochs)
    assert cfg.override(["train.lr=0.02"]).train.lr == 0.02
    with pytest.raises(ConfigError, match="train.epochs"):
        cfg.override({"train.epochs": 0})
    saved = cfg.to_dict() | {"train": cfg.to_dict()["train"] | {"resume_from": "/old/checkpoint"}}
    again = RaylmConfig.from_saved(saved, labels=["x", "y"], changes=["train.epochs=2"])
    assert again.task.labels == ["x", "y"] and again.train.resume_from is None and again.train.epochs == 2


@pytest.mark.parametrize("overrides, field", [
    (["compress.quantize.mode=static", "compress.export=safetensors"], "compress.export: int8 models are exported as onnx"),
    (["model.backend=keras", "compress.prune.method=structured"],
     "compress.prune.method: unknown compression method 'structured' .*backend keras.*known: magnitude, none"),
    (["model.backend=keras", "compress.prune.method=magnitude", "compress.prune.sparsity=0.5"], "compress.finetune_epochs"),
    (["model.backend=keras", "compress.export=onnx"], "compress.export: unknown compression method 'onnx' .*known: tflite"),
    (["compress.prune.method=random"], "compress.prune.method: unknown .*'random'.*known: magnitude, none, structured"),
    (["compress.quantize.mode=int4"], "compress.quantize.mode: unknown .*'int4'.*known: dynamic, none, static"),
    # tfmot has one int8 scheme (full int8 after quantization-aware training): no dynamic-range mode to name
    (["model.backend=keras", "compress.quantize.mode=dynamic"],
     "compress.quantize.mode: unknown .*'dynamic' .*backend keras.*known: none, static, static-selective"),
])
def test_backend_rules_are_refused_before_ray_starts(overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", "data.path=.", "task.labels=[a,b]", *overrides])


def test_a_sweep_space_that_breaks_a_backend_rule_is_refused():
    from raylm.tune import check_space

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "model.backend=keras", "data.path=.",
                             "task.labels=[a,b]", "compress.prune.method=magnitude", "compress.prune.sparsity=0", "compress.finetune_epochs=0",
                             "tune.space={compress.prune.sparsity: {choice: [0.0, 0.5]}}"])
    with pytest.raises(ConfigError, match="tune.space.compress.prune.sparsity: choice value 0.5 .*finetune_epochs"):
        check_space(cfg)


def test_overrides_may_come_before_and_after_the_flags_in_their_order():
    """`raylm train a=1 --config x.yaml b=2` refused `b=2` as an "unrecognized argument" (argparse gives the
    positional overrides only the run before the first flag), naming a valid key as the mistake."""
    from raylm.cli import _parse, build_parser

    args = _parse(build_parser(), ["train", "train.epochs=1", "--config", "x.yaml", "train.lr=0.1", "train.epochs=2"])
    assert args.config == "x.yaml" and args.overrides == ["train.epochs=1", "train.lr=0.1", "train.epochs=2"]
    with pytest.raises(SystemExit):  # a flag no verb has is still an error
        _parse(build_parser(), ["train", "--config", "x.yaml", "--epochs", "3"])
    with pytest.raises(SystemExit):  # and so is a key=value for a verb that takes none
        _parse(build_parser(), ["runs", "/tmp", "a=1"])


def test_a_declared_shared_mount_holds_the_demo_sets_unless_a_cache_dir_is_given():
    """With train.storage_shared=true the paths check no longer refuses the demo cache, whose default
    (~/.cache/raylm) is the driver's disk: tasks on other nodes could not read the demo set. It now
    defaults under the shared storage path; a data.cache_dir given, a URI storage or no mount keep theirs."""
    from raylm.config import load_config

    shared = ["train.storage_path=/mnt/raylm/runs", "train.storage_shared=true"]
    assert load_config(CONFIGS / "image_tune.yaml", shared).data.cache_dir == "/mnt/raylm/runs/.cache"
    assert load_config(CONFIGS / "image_tune.yaml", [*shared, "data.cache_dir=/data/c"]).data.cache_dir == "/data/c"
    assert load_config(CONFIGS / "image_tune.yaml", ["train.storage_path=/mnt/raylm/runs"]).data.cache_dir == "~/.cache/raylm"


def test_a_mistyped_key_is_answered_with_the_nearest_key_of_its_section():
    from raylm.config import ConfigError, load_config

    for typo, meant in (("train.epoch=2", "train.epochs"), ("compress.prune.sparsty=0.5", "compress.prune.sparsity"),
                        ("trian.epochs=2", "train")):
        with pytest.raises(ConfigError, match=rf"Extra inputs are not permitted.* \(did you mean {meant}\?\)"):
            load_config(CONFIGS / "image.yaml", [typo])
    with pytest.raises(ConfigError) as err:  # nothing near: no guess
        load_config(CONFIGS / "image.yaml", ["train.zzz=1"])
    assert "did you mean" not in str(err.value)
