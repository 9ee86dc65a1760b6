"""The decode stage's chunking: a whole block through a batch UDF a few rows at a time (issue 31)."""

import numpy as np

from raylm.data import _in_chunks


def _double(batch, *, factor):
    return {"x": batch["x"] * factor, "rows": np.full(len(batch["x"]), len(batch["x"]))}


def test_a_block_goes_through_the_stage_in_chunks_and_nothing_is_lost():
    block = {"x": np.arange(10)}
    out = list(_in_chunks(block, stage=_double, chunk=4, factor=3))
    assert [len(part["x"]) for part in out] == [4, 4, 2]  # at most `chunk` rows decoded at a time
    assert np.concatenate([part["x"] for part in out]).tolist() == (np.arange(10) * 3).tolist()


def test_an_empty_block_still_yields_its_columns_once():
    out = list(_in_chunks({"x": np.arange(0)}, stage=_double, chunk=4, factor=3))
    assert len(out) == 1 and len(out[0]["x"]) == 0 and set(out[0]) == {"x", "rows"}
