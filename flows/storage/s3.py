"""Conditional requests on S3 (the lease, batched deletes): boto3, because pyarrow.fs cannot send them.

`If-None-Match: *` creates an object only if the key is free, `If-Match: <etag>` replaces or
deletes it only if it is still the version read; S3 answers 412 (or 409 when two conditional
writes race) otherwise. The client is built from the same places pyarrow's S3 client reads
(`s3_client_options`), so one output URL means one bucket, one endpoint, one set of credentials.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from flows.errors import StorageError

LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
ABSENT = frozenset({"NoSuchKey", "404"})
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


def s3_client_options(url: str, region: str) -> dict[str, Any]:
    """boto3 client options for an s3:// URL, from the same places pyarrow's S3 reads them.

    The URL's `endpoint_override` (with `scheme`), `region` and `tls_ca_file_path` query options
    and `access:secret@` user info, as `pyarrow.fs.FileSystem.from_uri` reads them; the region
    pyarrow resolved; everything else (the AWS_* variables, AWS_ENDPOINT_URL(_S3), ~/.aws, an
    instance profile) from the standard AWS chain that pyarrow's S3 client also follows.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    options: dict[str, Any] = {"region_name": query.get("region") or region or None}
    endpoint = query.get("endpoint_override")
    if endpoint:
        options["endpoint_url"] = endpoint if "://" in endpoint else f"{query.get('scheme', 'https')}://{endpoint}"
    if parts.username:
        options["aws_access_key_id"] = unquote(parts.username)
        options["aws_secret_access_key"] = unquote(parts.password or "")
    if query.get("tls_ca_file_path"):
        options["verify"] = query["tls_ca_file_path"]
    return options


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Conditional:
    """Conditional writes on the objects under `root` (`bucket/prefix`); tags are ETags."""

    def __init__(self, url: str, root: str, region: str, location: str) -> None:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        self.bucket, _, self.prefix = root.partition("/")
        self.location = location
        self.client = boto3.session.Session().client("s3", **s3_client_options(url, region))
        self.errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def create(self, relative: str, data: bytes) -> str | None:
        return self._put(relative, data, IfNoneMatch="*")

    def read(self, relative: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))
            return bytes(response["Body"].read()), str(response["ETag"])
        except self.errors as exc:
            if _code(exc) in ABSENT:
                return None
            raise self._failed("read", relative, exc) from None

    def replace(self, relative: str, data: bytes, tag: str) -> str | None:
        return self._put(relative, data, IfMatch=tag)

    def delete(self, relative: str, tag: str) -> bool:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(relative), IfMatch=tag)
            return True
        except self.errors as exc:
            if _code(exc) in LOST_RACE | ABSENT:
                return False
            raise self._failed("delete", relative, exc) from None

    def delete_many(self, relatives: Iterable[str]) -> None:
        keys = [{"Key": self.key(r)} for r in relatives]
        for start in range(0, len(keys), DELETE_BATCH):
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys[start : start + DELETE_BATCH], "Quiet": True}
                )
            except self.errors as exc:
                raise self._failed("delete", keys[start]["Key"], exc) from None
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(f"cannot delete {first.get('Key')} in {self.location}: {first.get('Code')}")

    def _put(self, relative: str, data: bytes, **condition: str) -> str | None:
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=data, **condition)
            return str(response["ETag"])
        except self.errors as exc:
            if _code(exc) in LOST_RACE | ABSENT:
                return None
            raise self._failed("write", relative, exc) from None

    def _failed(self, action: str, relative: str, exc: Exception) -> StorageError:
        reason = _code(exc) or type(exc).__name__
        return StorageError(f"cannot {action} {relative} in {self.location}: {reason}")
