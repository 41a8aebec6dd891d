"""Input slicing: every record read exactly once, in order, never more than a batch at a time."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import flows.inputs
from flows.inputs import plan_slices, read_slice


@pytest.mark.parametrize("max_bytes", [1 << 62, 45, 200], ids=["records", "bytes-tight", "bytes"])
@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 100])
def test_slices_cover_every_record_once(tmp_path: Path, chunk: int, batch_size: int, max_bytes: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(flows.inputs, "SCAN_CHUNK", chunk)
    rng = random.Random(chunk * 1000 + batch_size)
    expected = []
    for f in range(3):
        lines = [f'{{"n": "{f}-{i}"}}' + " " * rng.randint(0, 20) for i in range(rng.randint(0, 13))]
        lines.insert(rng.randint(0, len(lines)), "")  # a blank line is no record
        end = "\n" if rng.random() < 0.5 else ""
        (tmp_path / f"{f}.ndjson").write_text("\n".join(lines) + end)
        expected += [(f"{tmp_path}/{f}.ndjson:{n}", line.encode()) for n, line in enumerate(lines, 1) if line]
        (tmp_path / f"{f}x.json").write_text('{\n "a": 1\n}')
        expected.append((f"{tmp_path}/{f}x.json", b'{\n "a": 1\n}'))
    got = []
    for batch in plan_slices([tmp_path], batch_size, max_bytes):
        records = [(r.source, r.data) for r in read_slice(batch)]
        assert len(records) <= batch_size
        assert len(records) <= 1 or sum(len(data) + 1 for _, data in records) <= max_bytes + len(records)
        got += records
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))


ID = "5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e00"


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (f"\ufeff{ID}\n{ID.upper()}\n".encode(), "ids.txt"),
        (f"  {ID}\t\r\n\t{ID.upper()} \n".encode(), "ids.txt"),
        (f"\ufeffid\n {ID}\n{ID.upper()}\t\n".encode(), "ids.csv"),
    ],
    ids=["byte-order-mark", "spaces-and-tabs", "csv-with-bom-and-spaces"],
)
def test_ids_are_stripped_of_a_byte_order_mark_and_surrounding_whitespace(
    tmp_path: Path, content: bytes, name: str
) -> None:
    (tmp_path / name).write_bytes(content)
    assert flows.inputs.read_ids(tmp_path / name) == [ID, ID.upper()]


@pytest.mark.parametrize("name", ["ids.txt", "ids.csv"])
def test_an_ids_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path, name: str) -> None:
    from flows.errors import ConfigurationError

    (tmp_path / name).write_bytes(b"id\n" + ID.encode() + b"\n\xff\xfe caf\xe9\n")
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        flows.inputs.read_ids(tmp_path / name)
