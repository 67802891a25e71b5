"""Record tables: atomic part files, reading a directory as one table, truncation for resume."""

from __future__ import annotations

import pandas as pd
import pytest

from geffect.training.records import RecordWriter, read_table, table_path


def effects(steps, instances=(0, 1), layers=("embed", "block.0")):
    rows = [dict(step=s, probe="forget", instance=i, layer=layer, direction="gradient", value=s + i / 10)
            for s in steps for i in instances for layer in layers]
    return pd.DataFrame(rows)


def test_flush_writes_parts_readable_as_one_table(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.add("effects", effects([0, 1]))
    writer.flush()
    writer.add("effects", effects([2]))
    assert writer.pending == 4
    writer.flush()
    assert writer.pending == 0
    names = sorted(p.name for p in table_path(tmp_path, "effects").iterdir())
    assert names == ["part-00000000-00000001.parquet", "part-00000002-00000002.parquet"]
    expected = effects([0, 1, 2])
    pd.testing.assert_frame_equal(read_table(tmp_path, "effects"), expected, check_dtype=False)
    # the plain pandas reader sees the same rows (the reporting layer reads this way)
    direct = pd.read_parquet(table_path(tmp_path, "effects")).sort_values(["step", "instance", "layer"])
    assert len(direct) == 12 and direct["value"].sum() == pytest.approx(expected["value"].sum())
    assert list(direct.columns) == ["step", "probe", "instance", "layer", "direction", "value"]


def test_empty_table_and_unknown_table(tmp_path):
    frame = read_table(tmp_path, "effects")
    assert frame.empty and "value" in frame.columns
    with pytest.raises(ValueError, match="unknown record table 'effect'"):
        RecordWriter(tmp_path).add("effect", effects([0]))
    with pytest.raises(ValueError, match="need a 'step' column"):
        RecordWriter(tmp_path).add("history", pd.DataFrame({"loss": [1.0]}))


def test_writing_the_same_steps_twice_is_refused(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.add("history", pd.DataFrame({"step": [0, 1], "loss": [1.0, 2.0]}))
    writer.flush()
    writer.add("history", pd.DataFrame({"step": [0, 1], "loss": [1.0, 2.0]}))
    with pytest.raises(FileExistsError, match="written twice"):
        writer.flush()


def test_truncate_drops_later_rows_on_disk_and_in_buffer(tmp_path):
    writer = RecordWriter(tmp_path)
    for first in (0, 3, 6):
        writer.add("effects", effects(range(first, first + 3)))
        writer.add("history", pd.DataFrame({"step": list(range(first, first + 3)), "loss": [0.5] * 3}))
        writer.flush()
    writer.add("effects", effects([9]))  # buffered, not flushed (as at a crash)
    writer.truncate(4)  # step 4 lies inside the part of steps 3..5: it is rewritten
    assert sorted(read_table(tmp_path, "effects")["step"].unique()) == [0, 1, 2, 3]
    assert read_table(tmp_path, "history")["step"].tolist() == [0, 1, 2, 3]
    assert writer.pending == 0
    # continuing after truncation adds no duplicate and leaves no gap
    writer.add("effects", effects([4, 5]))
    writer.flush()
    assert sorted(read_table(tmp_path, "effects")["step"].unique()) == [0, 1, 2, 3, 4, 5]
    assert len(read_table(tmp_path, "effects")) == 6 * 4


def test_temporary_files_are_ignored_and_cleaned(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.add("risks", pd.DataFrame({"step": [0], "probe": ["forget"], "instance": [3], "risk": [1.0],
                                      "risk_after": [0.9], "predicted_change": [-0.1]}))
    writer.flush()
    folder = table_path(tmp_path, "risks")
    (folder / ".part-00000001-00000001.parquet.tmp").write_bytes(b"half a file")  # a killed write
    assert read_table(tmp_path, "risks")["instance"].tolist() == [3]
    assert len(pd.read_parquet(folder)) == 1
    writer.truncate(1)
    assert not list(folder.glob(".*.tmp"))
