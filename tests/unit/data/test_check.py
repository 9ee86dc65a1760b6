"""The data check's pieces without Ray (raylm/data/check.py): what a batch of files or a table's rows
sum up to, row numbers, the columns a table must have, and when a cached check may be reused.
The Ray Data pass that runs these on the cluster is tested in tests/integration/data/."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylm.config import ImageDataConfig, load_config
from raylm.data import check
from raylm.data.check import (
    DataError,
    check_file_batch,
    check_table_batch,
    csv_parse_options,
    fingerprint,
    skip_invalid_csv_row,
    table_columns,
)

from tests.helpers.paths import REPO


def _png() -> bytes:
    return cv2.imencode(".png", np.full((12, 10, 3), 200, np.uint8))[1].tobytes()


def test_a_batch_of_files_counts_the_accepted_per_class_and_lists_the_bad_with_reasons():
    paths = ["/d/a/1.png", "/d/a/2.png", "/d/b/3.png", "/d/b/empty.png", "/d/b/not.png", "/d/c/4.png"]
    data = [_png(), _png(), _png(), b"", b"GIF89a......", _png()]
    rows = check_file_batch({"path": paths, "bytes": data}, modality="image", settings=ImageDataConfig(size=8),
                            root="/d", label_index={"a": 0, "b": 1})
    assert list(rows) == ["summary"] and len(rows["summary"]) == 1
    summary = json.loads(rows["summary"][0])
    assert summary["checked"] == 6
    assert summary["counts"] == {"a": 2, "b": 1}
    assert summary["bad"] == [
        {"file": "/d/b/empty.png", "label": "b", "reason": "empty (0 bytes)"},
        {"file": "/d/b/not.png", "label": "b", "reason": summary["bad"][1]["reason"]},
        {"file": "/d/c/4.png", "label": "c", "reason": "label 'c' is not one of task.labels"},
    ]
    assert "image" in summary["bad"][1]["reason"]
    # Without task.labels every folder is a class.
    open_classes = json.loads(check_file_batch({"path": paths[-1:], "bytes": data[-1:]}, modality="image",
                                               settings=ImageDataConfig(size=8), root="/d",
                                               label_index=None)["summary"][0])
    assert open_classes == {"checked": 1, "counts": {"c": 1}, "bad": []}


def _rows(n: int) -> list[dict]:
    """n text rows; row k (1-based) is bad when k is 3 (empty text), 5 (no label) or 300 (an unknown label)."""
    rows = [{"text": f"text {k}", "label": "pos" if k % 2 else "neg"} for k in range(1, n + 1)]
    rows[2]["text"] = "  "
    rows[4]["label"] = None
    if n >= 300:
        rows[299]["label"] = "maybe"
    return rows


def _write(tmp_path, fmt: str, rows: list[dict]) -> str:
    if fmt == "parquet":
        path = tmp_path / "t.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "csv":
        path = tmp_path / "t.csv"
        lines = ["text,label"] + [f"{r['text']},{r['label'] if r['label'] is not None else ''}" for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path = tmp_path / "t.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _table(path: str, fmt: str, stop_at_first: bool = False, label_index=None) -> list[dict]:
    return [json.loads(s) for out in check_table_batch(
        {"path": [path]}, modality="text", settings=None, fmt=fmt, value_column="text", label_column="label",
        label_index=label_index or {"pos": 0, "neg": 1}, stop_at_first=stop_at_first) for s in out["summary"]]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_tables_rows_are_numbered_across_chunks_and_the_bad_ones_listed(tmp_path, fmt):
    path = _write(tmp_path, fmt, _rows(310))
    summaries = _table(path, fmt)
    # One summary per chunk: 256 rows (parquet, jsonl), or pyarrow's CSV block (this whole small file).
    chunks = [310] if fmt == "csv" else [256, 54]
    assert [s["checked"] for s in summaries] == chunks
    bad = [b for s in summaries for b in s["bad"]]
    assert [(b["row"], b["reason"]) for b in bad] == [
        (3, "empty text"), (5, "empty label"), (300, "label 'maybe' is not one of task.labels")]
    assert all(b["file"] == path for b in bad)
    assert bad[2]["label"] == "maybe"
    counts = [s["counts"] for s in summaries]
    # Rows 1..256: 128 odd (pos) of which 3 and 5 are bad, 128 even (neg); rows 257..310 without 300.
    assert counts == ([{"pos": 153, "neg": 154}] if fmt == "csv" else [{"pos": 126, "neg": 128}, {"pos": 27, "neg": 26}])
    # fail: the pass stops after the first chunk that holds a bad row.
    assert [s["checked"] for s in _table(path, fmt, stop_at_first=True)] == chunks[:1]


def test_the_check_stops_at_the_chunk_of_the_first_bad_row_only_when_asked(tmp_path):
    rows = [{"text": f"t{k}", "label": "pos"} for k in range(600)]
    rows[400]["text"] = ""
    path = _write(tmp_path, "jsonl", rows)
    assert [s["checked"] for s in _table(path, "jsonl", stop_at_first=True)] == [256, 256]
    assert [s["checked"] for s in _table(path, "jsonl")] == [256, 256, 88]


def test_a_csv_line_with_the_wrong_number_of_fields_is_listed_with_its_row_number(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\nfine,pos\n"one, quoted\nacross lines",neg\nthree,fields,here\n ,neg\nlast,neg\n')
    (summary,) = _table(str(path), "csv")
    assert summary["checked"] == 5  # four rows read and one line skipped
    assert summary["counts"] == {"pos": 1, "neg": 2}  # the quoted field spans two lines and stays one row
    # Rows are records after the header: the skipped line is row 3, and the blank text after it row 4 (it
    # was numbered 3 when skipped lines were not counted).
    assert summary["bad"] == [{"file": str(path), "row": 3, "label": "",
                               "reason": "a line with 3 fields where the header has 2: 'three,fields,here'"},
                              {"file": str(path), "row": 4, "label": "neg", "reason": "empty text"}]
    assert skip_invalid_csv_row(object()) == "skip"
    assert csv_parse_options().newlines_in_values is True
    assert csv_parse_options().invalid_row_handler is skip_invalid_csv_row


def test_csv_row_numbers_hold_across_pyarrows_blocks_and_the_first_bad_row_stops_a_fail_check(tmp_path):
    """A file of several 1 MB blocks: skipped lines and bad rows keep their numbers in every block, and
    with ``fail`` the check stops at the block of the first bad row, whichever kind it is."""
    lines = ["text,label"]
    for k in range(1, 60_001):
        if k in (10, 30_000, 59_990):
            lines.append(f"row {k},pos,extra")  # a wrong field count
        elif k == 40_000:
            lines.append(" ,pos")  # blank text
        else:
            lines.append(f"row number {k} of a longer csv file,{'pos' if k % 2 else 'neg'}")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    summaries = _table(str(path), "csv")
    assert len(summaries) > 2 and sum(s["checked"] for s in summaries) == 60_000
    assert [(b["row"], b["reason"].split(":")[0]) for s in summaries for b in s["bad"]] == [
        (10, "a line with 3 fields where the header has 2"), (30_000, "a line with 3 fields where the header has 2"),
        (40_000, "empty text"), (59_990, "a line with 3 fields where the header has 2")]
    stopped = _table(str(path), "csv", stop_at_first=True)
    assert len(stopped) == 1 and [b["row"] for b in stopped[0]["bad"]] == [10]


def test_a_csv_cell_that_is_not_utf8_is_refused_alone_and_the_others_read_as_text(tmp_path):
    """One non-UTF-8 cell makes pyarrow read the whole column as bytes: str() of them trained on "b'...'"
    and passed b'' and b'   ' as texts. That cell is refused naming why; blank ones are still refused."""
    from raylm.data.text import bundled_text_model_dir, tokenize, tokenize_batch

    path = tmp_path / "t.csv"
    path.write_bytes(b'text,label\ngood food,pos\nCaf\xe9 au lait,pos\n,neg\n   ,neg\nrainy day,neg\n')
    (summary,) = _table(str(path), "csv")
    assert summary["counts"] == {"pos": 1, "neg": 1}
    assert [(b["row"], b["reason"].split(" (")[0]) for b in summary["bad"]] == [
        (2, "not UTF-8 text"), (3, "empty text"), (4, "empty text")]
    # Training's decode stage: the same rows kept, as the texts themselves.
    import pyarrow.csv

    table = pyarrow.csv.read_csv(path, parse_options=csv_parse_options())
    assert str(table.schema.field("text").type) == "binary"  # what made every cell bytes
    source = str(bundled_text_model_dir())
    batch = {"text": table.column("text").to_numpy(zero_copy_only=False),
             "label": table.column("label").to_numpy(zero_copy_only=False)}
    encoded = tokenize_batch(batch, tokenizer_source=source, max_length=16, label_index={"pos": 0, "neg": 1},
                             text_column="text", label_column="label")
    expected = tokenize(["good food", "rainy day"], source, 16)
    assert encoded["label"].tolist() == [0, 1]
    assert (encoded["input_ids"] == expected["input_ids"]).all()


def test_a_csv_quote_never_closed_is_listed_as_the_lines_it_swallowed(tmp_path):
    """A quote opened and never closed runs on over the next lines (quoted fields may span lines): the
    check names the line it opened on and how many lines went into that one broken row."""
    path = tmp_path / "t.csv"
    path.write_text('text,label\ngood movie,pos\n"bad film,neg\nfine,pos\nbad,neg\n')
    (summary,) = _table(str(path), "csv")
    assert summary["counts"] == {"pos": 1}
    assert [b["reason"] for b in summary["bad"]] == [
        "3 lines read as one row of 1 fields (the header has 2) from '\"bad film,neg': a quote opened there and never "
        "closed? Every line up to the file's end or the next quote is in it"]


def test_a_jsonl_row_without_the_label_key_is_an_empty_label(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n{"text": "b"}\n')
    (summary,) = _table(str(path), "jsonl")
    assert summary == {"checked": 2, "counts": {"pos": 1},
                       "bad": [{"file": str(path), "row": 2, "label": "", "reason": "empty label"}]}


def test_a_jsonl_file_saved_with_a_byte_order_mark_is_read_whole(tmp_path):
    """A Windows editor's UTF-8 BOM before the first object refused the whole file ("the first line is not a
    JSON object"); the check, the columns and training's line reader all take it as the object it is."""
    import pyarrow as pa

    from raylm.data.check import json_lines_table, table_columns

    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": "pos"}\r\n{"text": "b", "label": "neg"}\r\n')
    assert table_columns(str(path), "jsonl") == ["text", "label"]
    (summary,) = _table(str(path), "jsonl")
    assert summary == {"checked": 2, "counts": {"pos": 1, "neg": 1}, "bad": []}
    lines = path.read_bytes().decode("utf-8").splitlines()  # what read_text hands the UDF: the BOM kept
    table = json_lines_table({"text": pa.array(lines)})
    assert table.column("label").to_pylist() == ["pos", "neg"]


def test_table_columns_for_each_format_and_a_missing_column_names_the_key(tmp_path):
    rows = [{"review": "x", "stars": "5"}]
    for fmt in ("parquet", "csv", "jsonl"):
        path = _write(tmp_path, fmt, [{"text": "x", "label": "pos"}]) if fmt == "csv" else None
        if fmt != "csv":
            path = str(tmp_path / f"r.{fmt}")
            if fmt == "parquet":
                pq.write_table(pa.Table.from_pylist(rows), path)
            else:
                with open(path, "w") as f:
                    f.write("\n  \n" + json.dumps(rows[0]) + "\n")  # blank lines before the first object
        assert table_columns(path, fmt) == (["text", "label"] if fmt == "csv" else ["review", "stars"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("5\n")
    with pytest.raises(DataError, match=r"bad.jsonl: the first line is not a JSON object \(data.format=jsonl"):
        table_columns(str(bad), "jsonl")
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="the first line is not a JSON object"):
        table_columns(str(bad), "jsonl")
    path = str(tmp_path / "r.parquet")
    check._require_columns(path, "parquet", {"data.text.text_column": "review", "data.label_column": "stars"})
    with pytest.raises(DataError) as err:
        check._require_columns(path, "parquet", {"data.text.text_column": "review", "data.label_column": "label"})
    assert str(err.value) == (f"data.label_column: {path} has no column 'label'; its columns are 'review', 'stars'. "
                              "Set data.label_column=<one of them>")


def test_the_fingerprint_changes_with_a_files_size_or_time_not_with_the_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    first = fingerprint([str(a), str(b)])
    assert len(first) == 16 and int(first, 16) >= 0
    assert fingerprint([str(b), str(a)]) == first
    assert fingerprint([str(a)]) != first
    os.utime(b, ns=(1, 1))
    assert fingerprint([str(a), str(b)]) != first
    stamped = fingerprint([str(a), str(b)])
    b.write_bytes(b"22")
    os.utime(b, ns=(1, 1))
    assert fingerprint([str(a), str(b)]) != stamped


def _text_config(tmp_path, *overrides: str):
    table = tmp_path / "t.csv"
    if not table.exists():
        table.write_text("text,label\nhello,pos\nbye,neg\n")
    return load_config(None, ["task.modality=text", "model.name=bert_tiny", f"data.path={table}",
                              f"data.cache_dir={tmp_path / 'cache'}", *overrides])


def test_the_plan_lists_each_split_and_refuses_a_table_without_its_columns(tmp_path):
    from raylm.data.sources import resolve

    cfg = _text_config(tmp_path)
    source = resolve(cfg, extensions=())
    (entry,) = check._plan(cfg, source)
    assert entry == {"split": "train", "root": str(tmp_path / "t.csv"), "format": "csv",
                     "files": [str(tmp_path / "t.csv")], "ignored": [], "value_column": "text"}
    renamed = _text_config(tmp_path, "data.text.text_column=review")
    with pytest.raises(DataError, match=r"^data.text.text_column: .*t.csv has no column 'review'"):
        check._plan(renamed, resolve(renamed, extensions=()))
    relabelled = _text_config(tmp_path, "data.label_column=stars")
    with pytest.raises(DataError, match=r"^data.label_column: .*t.csv has no column 'stars'"):
        check._plan(relabelled, resolve(relabelled, extensions=()))


def test_a_cached_check_is_reused_only_while_files_and_acceptance_settings_are_unchanged(tmp_path):
    from raylm.data.sources import resolve

    cfg = _text_config(tmp_path)
    plan = check._plan(cfg, resolve(cfg, extensions=()))
    key = check._cache_key(cfg, plan)
    assert len(key) == 24 and key == check._cache_key(_text_config(tmp_path), plan)
    for changed in (["task.labels=[pos, neg]"], ["data.text.max_length=9"], ["data.label_column=stars"],
                    ["data.limits.max_image_pixels=1000"]):
        assert check._cache_key(_text_config(tmp_path, *changed), plan) != key, changed
    (tmp_path / "more.csv").write_text("text,label\nhi,pos\n")
    assert check._cache_key(cfg, [dict(plan[0], files=plan[0]["files"] + [str(tmp_path / "more.csv")])]) != key
    assert check._cache_key(cfg, [dict(plan[0], root=str(tmp_path))]) != key
    assert check._cache_key(cfg, [dict(plan[0], split="validation")]) != key
    assert check._cache_key(cfg, [dict(plan[0], format="jsonl")]) != key


def test_the_report_is_written_whole_as_indented_utf8(tmp_path):
    target = tmp_path / "deep" / "data_report.json"
    check._write_json(target, {"classes": {"垂直": 2}})
    text = target.read_text(encoding="utf-8")
    assert text == '{\n  "classes": {\n    "垂直": 2\n  }\n}'
    check._write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["data_report.json"]  # no temporary left


# Aimed at the survivors of benchmarks/mutation.sh raylm/data/check.py (docs/testing.md names them).


def test_the_input_limits_reach_the_decoder_for_files_and_table_rows(tmp_path):
    """data.limits (here 64 pixels; the PNG holds 120) refuse a file and a table row that the decoder
    settings alone accept: the limits are passed down, not dropped on the way."""
    from raylm.config import InputLimits

    settings, small = ImageDataConfig(size=8), InputLimits(max_image_pixels=64)
    assert check.acceptance_problem("image", _png(), "a", settings, {"a": 0}) is None
    refused = check.acceptance_problem("image", _png(), "a", settings, {"a": 0}, small)
    assert refused and "pixels" in refused
    batch = {"path": ["/d/a/1.png"], "bytes": [_png()]}
    assert json.loads(check_file_batch(batch, modality="image", settings=settings, root="/d", label_index={"a": 0})["summary"][0])["counts"] == {"a": 1}
    (summary,) = check_file_batch(batch, modality="image", settings=settings, root="/d", label_index={"a": 0}, limits=small)["summary"]
    assert json.loads(summary)["bad"] == [{"file": "/d/a/1.png", "label": "a", "reason": refused}]
    path = tmp_path / "images.parquet"
    pq.write_table(pa.Table.from_pylist([{"image": _png(), "label": "a"}]), path)

    def table(limits):
        (out,) = check_table_batch({"path": [str(path)]}, modality="image", settings=settings, fmt="parquet",
                                   value_column="image", label_column="label", label_index={"a": 0},
                                   stop_at_first=False, limits=limits)
        return json.loads(out["summary"][0])

    assert table(None) == {"checked": 1, "counts": {"a": 1}, "bad": []}
    assert table(small)["bad"] == [{"file": str(path), "row": 1, "label": "a", "reason": refused}]


def test_a_long_bad_csv_line_is_quoted_to_80_characters(tmp_path):
    path = tmp_path / "t.csv"
    long_line = "x" * 100 + ",y,z"
    path.write_text(f"text,label\nfine,pos\n{long_line}\n")
    (summary,) = _table(str(path), "csv")
    assert summary["bad"][0]["reason"] == f"a line with 3 fields where the header has 2: {long_line[:80]!r}"


def test_a_jsonl_chunk_without_the_label_key_at_all_is_empty_labels_not_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    (summary,) = _table(str(path), "jsonl")
    assert summary == {"checked": 2, "counts": {}, "bad": [
        {"file": str(path), "row": k, "label": "", "reason": "empty label"} for k in (1, 2)]}


def test_the_columns_of_a_csv_with_a_bad_first_block_line_and_of_an_empty_jsonl(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nthree,fields,here\nfine,pos\n")
    assert table_columns(str(csv), "csv") == ["text", "label"]  # the bad line is the check's to list
    empty = tmp_path / "t.jsonl"
    empty.write_text("\n\n")
    assert table_columns(str(empty), "jsonl") == []  # no columns: the plan then names the missing one
    with pytest.raises(DataError, match=r"^data.text.text_column: .*t.jsonl has no column 'text'; its columns are \. "):
        check._require_columns(str(empty), "jsonl", {"data.text.text_column": "text"})


def test_the_report_is_written_under_missing_folders_and_a_failed_write_leaves_only_a_hidden_temporary(tmp_path,
                                                                                                    monkeypatch):
    import tempfile

    elsewhere = tmp_path / "system-temp"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))  # a temporary there could not be renamed across disks
    target = tmp_path / "a" / "b" / "data_report.json"
    check._write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        check._write_json(target, {"a": object()})  # not JSON: fails while writing
    assert json.loads(target.read_text()) == {"a": 1}  # the old report stays whole
    assert all(p.name == "data_report.json" or p.name.startswith(".data_report.json-") for p in target.parent.iterdir())
    assert not list(elsewhere.iterdir())  # the temporary is the report's sibling


def test_the_plan_of_a_class_folder_lists_its_files_and_asks_for_no_columns(tmp_path):
    from raylm.data.sources import resolve

    for label in ("h", "v"):
        (tmp_path / "images" / label).mkdir(parents=True)
        (tmp_path / "images" / label / "0.png").write_bytes(_png())
    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", f"data.path={tmp_path / 'images'}",
                             f"data.cache_dir={tmp_path / 'cache'}"])
    (entry,) = check._plan(cfg, resolve(cfg, extensions=(".png",)))
    assert entry["format"] == "folder" and "value_column" not in entry
    assert sorted(entry["files"]) == [str(tmp_path / "images" / label / "0.png") for label in ("h", "v")]


def test_a_local_data_path_of_the_wrong_kind_or_without_the_columns_is_refused_before_ray(tmp_path):
    """A folder for text data, or a table without the configured columns, was refused 15-40 s after Ray's
    start, with a run directory made for nothing; `load_run_config` (every training verb) refuses it first."""
    import argparse

    from raylm.cli import load_run_config
    from raylm.data.check import DataError

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    table = tmp_path / "t.csv"
    table.write_text("text,label\nhi there,a\nbye now,b\n")

    def run_config(config: str, *overrides: str):
        return load_run_config(argparse.Namespace(config=str(REPO / "jobs" / "configs" / config), overrides=list(overrides)))

    with pytest.raises(DataError, match=r"^data.format: text data must be csv, jsonl or parquet, not a folder"):
        run_config("text.yaml", f"data.path={tmp_path / 'imgs'}")
    with pytest.raises(DataError, match=r"^data.label_column: .* has no column 'sentiment'; its columns are 'text', 'label'"):
        run_config("text.yaml", f"data.path={table}", "data.label_column=sentiment")
    with pytest.raises(DataError, match=r"^data.image_column: .* has no column 'image'"):
        run_config("image.yaml", f"data.path={table}")
    assert run_config("text.yaml", f"data.path={table}").data.path == str(table)
    # A folder with one class of audio files, or none: the image run's class folders are not there.
    (tmp_path / "wavs" / "low").mkdir(parents=True)
    (tmp_path / "wavs" / "low" / "0.wav").write_bytes(b"RIFF")
    (tmp_path / "wavs" / "high").mkdir()
    with pytest.raises(DataError, match=r"^data.path: .*wavs must hold at least 2 class folders of .wav/.flac/.ogg files \(found 1"):
        run_config("audio.yaml", f"data.path={tmp_path / 'wavs'}")
    with pytest.raises(DataError, match=r"^data.path: .*wavs must hold at least 2 class folders of .png/.jpg/.*files \(found 0"):
        run_config("image.yaml", f"data.path={tmp_path / 'wavs'}")
    (tmp_path / "wavs" / "high" / "sub").mkdir()
    (tmp_path / "wavs" / "high" / "sub" / "1.WAV").write_bytes(b"RIFF")  # below a class folder, any case: counted
    assert run_config("audio.yaml", f"data.path={tmp_path / 'wavs'}").data.path == str(tmp_path / "wavs")


def test_data_check_and_augment_preview_refuse_a_wrong_path_before_ray(tmp_path, monkeypatch, capsys):
    """A new user's `raylm data check` on one WAV file answered after 29 s of Ray's start (`raylm train` in 2.5 s)."""
    import raylm.runtime
    from raylm.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the data.path check")

    monkeypatch.setattr(raylm.runtime, "ensure_ray", no_ray)
    (tmp_path / "low").mkdir()
    wav = tmp_path / "low" / "0.wav"
    wav.write_bytes(b"RIFF")
    common = ["--config", str(REPO / "jobs" / "configs" / "audio.yaml"), f"train.storage_path={tmp_path / 'runs'}"]
    assert main(["data", "check", *common, f"data.path={wav}"]) == 2  # a config error: no table, no folder
    assert "data.path" in capsys.readouterr().err
    assert main(["data", "check", *common, f"data.path={tmp_path}"]) == 1
    assert "at least 2 class folders of .wav/.flac/.ogg files (found 1" in capsys.readouterr().err
    assert main(["augment", "preview", *common, f"data.path={tmp_path}", "--out", str(tmp_path / "p.png")]) == 2
    assert "at least 2 class folders" in capsys.readouterr().err
    (tmp_path / "high").mkdir()
    (tmp_path / "high" / "1.wav").write_bytes(b"RIFF")
    assert main(["augment", "preview", *common, f"data.path={tmp_path}", "--out", str(tmp_path / "p.png"),
                 "--samples", "0"]) == 2
    assert "--samples and --epochs: at least 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_data_path_in_a_bucket_that_is_not_there_is_refused_before_ray(s3_bucket):
    """A data.path URI whose bucket does not exist (or whose store does not answer) failed after Ray's
    start with a raw OSError; it is refused first, naming data.path."""
    import argparse

    from raylm.cli import load_run_config
    from raylm.data.check import DataError

    def run_config(*overrides: str):
        return load_run_config(argparse.Namespace(config=str(REPO / "jobs" / "configs" / "text.yaml"), overrides=list(overrides)))

    with pytest.raises(DataError, match=r"^data.path: s3://no-such-bucket-y/t.csv: bucket 'no-such-bucket-y' does not exist"):
        run_config("data.path=s3://no-such-bucket-y/t.csv")
    assert run_config(f"data.path=s3://{s3_bucket}/t.csv").data.path == f"s3://{s3_bucket}/t.csv"  # the bucket is there
