"""A small file store over pyarrow.fs: local disk or any pyarrow filesystem URL (s3://...).

What the commit protocol needs from storage: whole-object writes that readers never see half
done, moves, deletes, listings. On local disk a write goes to a temporary name, is fsynced and
renamed (atomic); on object storage a PUT is atomic by itself and a move is copy + delete, which
the protocol only ever performs on already-committed, idempotent steps.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flows.errors import StorageError


class Store:
    """Files under one root (a local directory or a bucket prefix)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            if "://" in url:
                self.fs, root = pafs.FileSystem.from_uri(url)
            else:
                self.fs, root = pafs.LocalFileSystem(), str(Path(url).resolve())
        except (pa.ArrowInvalid, OSError) as exc:
            raise StorageError(f"unusable output location {url!r}: {exc}") from None
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a whole file; readers see the old file, nothing, or all of the new one."""
        target = self.path(relative)
        if not self.local:
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(target).with_name(f".{Path(target).name}.{uuid.uuid4().hex[:8]}.tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
        _fsync_dir(Path(target).parent)

    def write_parquet(self, relative: str, table: pa.Table, **options: object) -> None:
        """Write an Arrow table as one Parquet file (see write_bytes)."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, **options)
        self.write_bytes(relative, buffer.getvalue())

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as handle:
            return bytes(handle.read())

    def read_parquet(self, relative: str) -> pa.Table:
        """Read through one open handle, so a concurrent replacement cannot mix two files."""
        with self.fs.open_input_file(self.path(relative)) as handle:
            return pq.read_table(handle)

    def exists(self, relative: str) -> bool:
        return bool(self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound)

    def move(self, src: str, dst: str) -> None:
        """Move a file, replacing `dst` (atomic on local disk; copy then delete on object stores)."""
        if self.local:
            Path(self.path(dst)).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path(src), self.path(dst))
            _fsync_dir(Path(self.path(dst)).parent)
        else:
            self.fs.copy_file(self.path(src), self.path(dst))
            self.fs.delete_file(self.path(src))

    def delete(self, relative: str) -> None:
        """Delete a file if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(relative))

    def delete_dir(self, relative: str) -> None:
        """Delete a folder and everything below it, if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path(relative))

    def list(self, relative: str, suffix: str = "") -> list[str]:
        """Paths (relative to the root) of the files below `relative`, sorted."""
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        found = [i.path[len(self.root) + 1 :] for i in infos if i.type == pafs.FileType.File]
        return sorted(p for p in found if p.endswith(suffix) and not Path(p).name.startswith("."))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
