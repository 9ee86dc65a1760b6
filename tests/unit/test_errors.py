"""One error base: every error raylm raises for something a user can fix is a ``RaylmError``, and the
CLI turns each into exit code 2 and its message (no traceback)."""

from __future__ import annotations

import pytest

from raylm.errors import RaylmError


def test_every_named_error_is_a_raylm_error():
    from raylm.artifacts.architecture import ArchitectureError
    from raylm.artifacts import ArtifactError
    from raylm.compress.pipeline import CompressError
    from raylm.config import ConfigError
    from raylm.data.check import DataError
    from raylm.data.limits import DecodeError
    from raylm.pipeline import PipelineError
    from raylm.serve.preprocess import InputError
    from raylm.serve.v2 import V2Error
    from raylm.train.checkpoint import CheckpointError

    for error in (ArchitectureError, ArtifactError, CompressError, ConfigError, DataError, DecodeError,
                  PipelineError, InputError, V2Error, CheckpointError):
        assert issubclass(error, RaylmError) and issubclass(error, ValueError), error


@pytest.mark.parametrize("argv, message", [
    (["compress", "--checkpoint", "/nonexistent/checkpoint_000001"], "--checkpoint: .*not a raylm checkpoint"),
    (["serve", "--artifact", "/nonexistent/artifact"], "/nonexistent/artifact: does not exist"),
    (["train", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
])
def test_the_cli_exits_2_with_the_message(argv, message, capsys):
    from raylm.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("raylm: ") and "Traceback" not in err
    import re

    assert re.search(message, err), err
