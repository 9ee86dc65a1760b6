"""A text run's hub model name that cannot be had is refused before Ray starts, naming the field (a user
saw an 87-line Ray Data worker error 53 s into ``raylm train ... model.pretrained=bert-base-uncased``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raylm.config import ConfigError, load_config
from tests.helpers.paths import REPO

MISSING = "raylm-no-such-org/no-such-model-7f3c"  # refused online (no such repo) and offline (no hub) alike


def test_a_hub_name_that_cannot_be_had_names_the_field(tmp_path, monkeypatch):
    from raylm.hf_sources import check_hub_sources

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = load_config(REPO / "jobs" / "configs" / "text.yaml", [f"model.pretrained={MISSING}"])
    with pytest.raises(ConfigError, match=rf"^model.pretrained: {MISSING} is no local directory, not in the Hugging "
                                          r"Face cache, and the hub did not answer for it \(.*\); where the hub is out of "
                                          r"reach, give the directory of a downloaded model$"):
        check_hub_sources(cfg)
    cfg = load_config(REPO / "jobs" / "configs" / "text.yaml", [f"data.text.tokenizer={MISSING}"])
    with pytest.raises(ConfigError, match=r"^data.text.tokenizer: "):
        check_hub_sources(cfg)
    check_hub_sources(load_config(REPO / "jobs" / "configs" / "text.yaml", []))  # the bundled model: a directory


def test_train_refuses_it_before_ray_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "raylm.cli", "train", "--config", "jobs/configs/text.yaml",
                           f"model.pretrained={MISSING}", f"train.storage_path={tmp_path / 'runs'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 2 and done.stderr.startswith(f"raylm: model.pretrained: {MISSING} is no local"), done.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
