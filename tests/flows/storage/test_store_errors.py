"""`Store` is the one place where the output location's I/O errors become talktime's: transient
(retried by a commit) or permanent (never retried), with no credentials in the message."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from flows.errors import StorageError, TransientStorageError
from flows.storage.store import Store, storage_error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError(errno.ETIMEDOUT, "Connection timed out"), True),
        (OSError(errno.ECONNRESET, "Connection reset by peer"), True),
        (OSError("AWS Error SLOW_DOWN during UploadPart operation: Please reduce your request rate."), True),
        (OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 28, Timeout was reached"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (OSError(errno.EACCES, "Permission denied"), False),
        (OSError("AWS Error ACCESS_DENIED during PutObject operation: Access Denied"), False),
        (OSError("Bucket 'nope' not found"), False),
    ],
    ids=["timeout", "reset", "s3-slow-down", "s3-network", "disk-full", "permission", "s3-denied", "no-bucket"],
)  # fmt: skip
def test_an_io_error_is_classified_transient_or_permanent(error: OSError, transient: bool) -> None:
    found = storage_error(error, "write", "s3://bucket/out/x.parquet")
    assert isinstance(found, StorageError)
    assert isinstance(found, TransientStorageError) is transient
    assert str(found).startswith("cannot write s3://bucket/out/x.parquet: ")


def test_a_store_method_translates_io_errors_and_keeps_file_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(str(tmp_path))

    def failing(*_: object, **__: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    (tmp_path / "a.json").write_bytes(b"{}")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing.json")
    monkeypatch.setattr("flows.storage.store._written_aside", failing)
    with pytest.raises(TransientStorageError, match=r"^cannot write .*/b\.json: Input/output error$"):
        store.write_bytes("b.json", b"{}")
    assert store.read_bytes("a.json") == b"{}"


def test_a_file_put_from_another_disk_is_copied_beside_the_target_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import flows.storage.store

    rename = flows.storage.store._rename
    calls: list[str] = []

    def cross_device(src: Path, dst: Path) -> None:
        calls.append(src.name)
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        rename(src, dst)

    monkeypatch.setattr(flows.storage.store, "_rename", cross_device)
    local = tmp_path / "scratch.parquet"
    local.write_bytes(b"content")
    Store(str(tmp_path / "out")).put_file(str(local), "x/y.parquet")
    assert (tmp_path / "out" / "x" / "y.parquet").read_bytes() == b"content"
    assert len(calls) == 2 and calls[1].startswith(".y.parquet.")  # the copy, renamed into place
    assert [p for p in os.listdir(tmp_path / "out" / "x") if p.endswith(".tmp")] == []
