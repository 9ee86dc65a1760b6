"""A failing command's traceback reaches the run's logs/ray.log in its scratch before the scratch is committed."""

from raylm.storage.workspace import _log_traceback


def test_the_traceback_is_appended_to_the_scratch_log(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ray.log").write_text("earlier lines\n")
    try:
        raise ValueError("the cause the console points at")
    except ValueError:
        _log_traceback(tmp_path)
    text = (logs / "ray.log").read_text()
    assert text.startswith("earlier lines\n") and "Traceback" in text and "ValueError: the cause the console points at" in text


def test_no_log_file_no_traceback_written(tmp_path):  # -v: the console shows it; nothing is created
    try:
        raise ValueError("x")
    except ValueError:
        _log_traceback(tmp_path)
    assert not (tmp_path / "logs").exists()
