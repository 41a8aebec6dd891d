"""A small file store over pyarrow.fs: local disk or any pyarrow filesystem URL (s3://...).

What the commit protocol needs from storage: whole-object writes that readers never see half
done, moves, deletes, listings. On local disk a write goes to a temporary name, is fsynced and
renamed (atomic); on object storage a PUT is atomic by itself and a move is copy + delete, which
the protocol only ever performs on already-committed, idempotent steps.

What the writer's lease (`flows.storage.lease`) needs: conditional writes, each compared against
a tag of the object's current content. On S3 they are requests with `If-None-Match: *` and
`If-Match: <etag>` (boto3: pyarrow.fs cannot send them), with the credentials, region and
endpoint pyarrow's S3 uses. On local disk a create is `link()` of a fully written temporary
file (fails if the name exists: atomic, and never a half-written lease), and compare-and-swap
runs under an exclusive `flock` of a sibling lock file (see `flows.storage.lease`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flows.errors import StorageError, TransientStorageError

if TYPE_CHECKING:
    from flows.storage.s3 import S3Conditional


P = ParamSpec("P")
R = TypeVar("R")
TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
     errno.EPIPE, errno.EIO, errno.EBUSY}
)  # fmt: skip
# What pyarrow's S3 client says when a request may pass on retry (it raises OSError without an errno).
_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|timeout|connection|reset|throttl|slow[ _]?down|reduce your request rate|"
    r"service unavailable|internal ?error|temporar|network|curl|\b50[0234]\b|request limit",
    re.IGNORECASE,
)


def storage_error(exc: OSError, action: str, location: str) -> StorageError:
    """An I/O error of the output location as talktime's: transient (retried) or permanent (not), as
    delta-rs's `retry_ext.rs` retries only what may pass. Its message names the action, the file and
    the cause, never credentials (locations are shown without them)."""
    reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    transient = exc.errno in TRANSIENT_ERRNOS or (exc.errno is None and bool(_TRANSIENT_TEXT.search(str(exc))))
    kind = TransientStorageError if transient else StorageError
    return kind(f"cannot {action} {location}: {reason}")


def _io(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Translate a Store method's I/O errors (FileNotFoundError aside: a signal, not a failure)."""

    def wrap(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except FileNotFoundError:
                raise
            except OSError as exc:
                store: Any = args[0]
                what = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
                error = storage_error(exc, action, f"{store.location}/{what}".rstrip("/"))
            raise error

        return call

    return wrap


class Store:
    """Files under one root (a local directory or a bucket prefix). The one place where the output
    location's I/O errors become talktime's (`storage_error`): the methods raise StorageError or
    TransientStorageError, or FileNotFoundError where a file is missing."""

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

    @property
    def location(self) -> str:
        """The output location as people write it, without credentials or query options."""
        if self.local or "://" not in self.url:
            return self.url
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path}".rstrip("/")

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    @_io("write")
    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a whole file; readers see the old file, nothing, or all of the new one."""
        target = self.path(relative)
        if not self.local:
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            return
        _written_aside(Path(target), data).replace(target)
        fsync_directory(Path(target).parent)

    @_io("write")
    def write_parquet(self, relative: str, table: pa.Table, **options: object) -> None:
        """Write an Arrow table as one Parquet file (see write_bytes)."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, **options)
        self.write_bytes(relative, buffer.getvalue())

    @_io("write")
    def put_file(self, local: str, relative: str) -> None:
        """Place a local file at `relative` whole: a rename on the same disk, else one upload."""
        target = self.path(relative)
        if not self.local:
            pafs.copy_files(local, target, destination_filesystem=self.fs)
            return
        try:
            _rename(Path(local), Path(target))
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            aside = Path(target).with_name(f".{Path(target).name}.{uuid.uuid4().hex[:8]}.tmp")
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, aside)  # another disk: copied beside the target, then renamed (atomic)
            with aside.open("rb+") as handle:
                os.fsync(handle.fileno())
            _rename(aside, Path(target))

    @_io("read")
    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as handle:
            return bytes(handle.read())

    @_io("read")
    def read_parquet(
        self, relative: str, columns: list[str] | None = None, filters: list[tuple[str, str, Any]] | None = None
    ) -> pa.Table:
        """Read through one open handle, so a concurrent replacement cannot mix two files; only
        those of `columns` the file has, and only the rows `filters` (pyarrow's) keep, when given."""
        with self.fs.open_input_file(self.path(relative)) as handle:
            if columns is None and filters is None:
                return pq.read_table(handle)
            names = pq.ParquetFile(handle).schema_arrow.names
            wanted = names if columns is None else [c for c in columns if c in names]
            return pq.read_table(handle, columns=wanted, filters=filters)

    @_io("read")
    def exists(self, relative: str) -> bool:
        return bool(self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound)

    def move(self, src: str, dst: str) -> None:
        """Move a file, replacing `dst` (atomic on local disk; copy then delete on object stores)."""
        if self.local:
            _rename(Path(self.path(src)), Path(self.path(dst)))
        else:
            self.fs.copy_file(self.path(src), self.path(dst))
            self.fs.delete_file(self.path(src))

    @_io("write")
    def place(self, src: str, dst: str) -> None:
        """Put `src`'s content at `dst` in one step: a rename on disk, a server-side copy on an object
        store (there the source stays until its staging folder is dropped: deleting it is one more
        request that nothing needs done yet)."""
        if self.local:
            _rename(Path(self.path(src)), Path(self.path(dst)))
        else:
            self.fs.copy_file(self.path(src), self.path(dst))

    @_io("delete")
    def delete(self, relative: str) -> None:
        """Delete a file if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(relative))

    @_io("delete")
    def delete_many(self, relatives: list[str]) -> None:
        """Delete these files (those that exist) back to back: on S3, one request per 1,000."""
        if relatives and self.fs.type_name == "s3":
            self.s3.delete_many(relatives)
            return
        for relative in relatives:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.path(relative))

    @_io("delete")
    def delete_dir(self, relative: str) -> None:
        """Delete a folder and everything below it, if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path(relative))

    @_io("list")
    def list(self, relative: str, suffix: str = "") -> list[str]:
        """Paths (relative to the root) of the files below `relative`, sorted."""
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        found = [i.path[len(self.root) + 1 :] for i in infos if i.type == pafs.FileType.File]
        return sorted(p for p in found if p.endswith(suffix) and not Path(p).name.startswith("."))

    # Conditional writes (the lease). A tag names one version of an object's content.

    @functools.cached_property
    def s3(self) -> S3Conditional:
        """Requests pyarrow.fs cannot send, to this S3 location (boto3, imported on first use)."""
        from flows.storage.s3 import S3Conditional

        return S3Conditional(self.url, self.root, self.fs.region, self.location)

    @functools.cached_property
    def conditional(self) -> ConditionalWrites:
        """Conditional writes on this store (StorageError where the filesystem has none)."""
        if self.local:
            return LocalConditional(self.root)
        if self.fs.type_name == "s3":
            return self.s3
        raise StorageError(
            f"{self.location}: this filesystem has no conditional writes, so talktime cannot make sure "
            "that only one writer uses it; write to local disk or S3"
        )

    def create_if_absent(self, relative: str, data: bytes) -> str | None:
        """Write a whole file only if none is there (atomic); its tag, or None if one is there."""
        return self.conditional.create(relative, data)

    def read_tagged(self, relative: str) -> tuple[bytes, str] | None:
        """A file's content and tag (None if there is none)."""
        return self.conditional.read(relative)

    def replace_if_match(self, relative: str, data: bytes, tag: str) -> str | None:
        """Replace a file only if its content is still the version `tag` names; the new tag, or None."""
        return self.conditional.replace(relative, data, tag)

    def delete_if_match(self, relative: str, tag: str) -> bool:
        """Delete a file only if its content is still the version `tag` names; whether it was deleted."""
        return self.conditional.delete(relative, tag)


class ConditionalWrites(Protocol):
    def create(self, relative: str, data: bytes) -> str | None: ...
    def read(self, relative: str) -> tuple[bytes, str] | None: ...
    def replace(self, relative: str, data: bytes, tag: str) -> str | None: ...
    def delete(self, relative: str, tag: str) -> bool: ...


class LocalConditional:
    """Conditional writes on local disk: `link()` to create, compare-and-swap under `flock`."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def create(self, relative: str, data: bytes) -> str | None:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = _written_aside(target, data)
        try:
            os.link(aside, target)  # fails if `target` exists; readers see all of `data` or nothing
        except FileExistsError:
            return None
        finally:
            aside.unlink()
        fsync_directory(target.parent)
        return _tag(data)

    def read(self, relative: str) -> tuple[bytes, str] | None:
        try:
            data = (self.root / relative).read_bytes()
        except FileNotFoundError:
            return None
        return data, _tag(data)

    def replace(self, relative: str, data: bytes, tag: str) -> str | None:
        target = self.root / relative
        with self._locked(target):
            current = self.read(relative)
            if current is None or current[1] != tag:
                return None
            _written_aside(target, data).replace(target)
            fsync_directory(target.parent)
            return _tag(data)

    def delete(self, relative: str, tag: str) -> bool:
        target = self.root / relative
        with self._locked(target):
            current = self.read(relative)
            if current is None or current[1] != tag:
                return False
            target.unlink()
            fsync_directory(target.parent)
            return True

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        """Hold an exclusive flock on `.{name}.lock` beside `target` (released on close, and by the
        kernel if the process dies, so a crash never leaves it held)."""
        import fcntl

        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.with_name(f".{target.name}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _written_aside(target: Path, data: bytes) -> Path:
    """`data` written and fsynced under a temporary name beside `target`; that name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    with aside.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return aside


def _rename(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_directory(dst.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or new file in `directory` durable (its entry, not only the file's data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
