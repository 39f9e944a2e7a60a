"""An archive in S3 or an S3-compatible server (MinIO, Ceph, SeaweedFS...).

No-clobber writes use ``If-None-Match: *`` on PutObject and CompleteMultipartUpload.
The file's sha256 travels as object metadata, because the ETag is not a content hash
for multipart or KMS-encrypted objects: when a write finds its key taken (412, or 409
on a race), the stored sha256 tells a retry of our own earlier success (a lost
response) from a different writer.

Every botocore error is translated here into one ``StoreError`` line, never a
traceback, and never with a secret in it.
"""

from __future__ import annotations

import builtins  # the method `list` shadows the type inside the class
import hashlib
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from archiver import failpoints
from archiver.errors import AlreadyExists, StoreError
from archiver.store.base import ObjectInfo
from archiver.store.options import S3Options
from archiver.store.s3client import (
    error_code,
    http_status,
    make_client,
    redact,
    translate,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# S3 allows at most 10,000 parts; bigger files get bigger parts.
_MAX_PARTS = 10_000
_CHUNK = 1024 * 1024

# A conditional write lost: 412 when the key exists, 409 when another write raced ours.
PROBE_KEY = "_probe/no-clobber"
PROBE_BODY = b"nats-archiver checks that this store refuses to overwrite objects\n"
_TAKEN_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_BotoError = (BotoCoreError, ClientError)


class S3Store:
    """Objects under ``prefix`` in ``bucket``. The archiver never creates buckets."""

    def __init__(self, bucket: str, prefix: str, options: S3Options | None = None) -> None:
        self.bucket = bucket
        self.options = options or S3Options()
        stripped = prefix.strip("/")
        self._prefix = f"{stripped}/" if stripped else ""
        self._client = make_client(self.options)
        self._extra = self._write_args()

    @property
    def prefix(self) -> str:
        """The key prefix in the bucket: empty, or ending in ``/``."""
        return self._prefix

    @property
    def client(self) -> S3Client:
        """The underlying boto3 client (tests and drills)."""
        return self._client

    @property
    def endpoint(self) -> str:
        """The endpoint actually used, including one boto3 took from the environment."""
        return redact(self._client.meta.endpoint_url)

    def _write_args(self) -> dict[str, Any]:
        """Encryption and storage class, shared by PutObject and CreateMultipartUpload."""
        args: dict[str, Any] = {}
        if self.options.sse:
            args["ServerSideEncryption"] = self.options.sse
        if self.options.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.options.sse_kms_key_id
        if self.options.storage_class:
            args["StorageClass"] = self.options.storage_class
        return args

    def describe(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self._prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{self._key(key)}" if key is not None else self.describe()

    def _error(self, exc: Exception, doing: str, key: str | None = None) -> StoreError:
        """One clear line for a botocore error. ``key`` None means a bucket-level call."""
        return translate(exc, doing, self.bucket, self.endpoint, self._where(key), key is None)

    # -- the Store protocol ------------------------------------------------------------

    def check(self, writing: bool = False) -> None:
        """HEAD the bucket: proves endpoint, credentials and bucket in one request
        (whether we may write shows at the first write, or the no-clobber probe)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except _BotoError as exc:
            raise self._error(exc, "checking") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        """One PutObject, only if ``key`` does not exist."""
        self._put_object(key, data, hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """PutObject below the multipart threshold, else a multipart upload."""
        try:
            size = path.stat().st_size
            if size < self.options.multipart_threshold or size == 0:
                with path.open("rb") as f:
                    self._put_object(key, f, sha256)
                return
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self._put_multipart(key, path, size, sha256)

    def _put_object(self, key: str, body: bytes | IO[bytes], sha256: str) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                IfNoneMatch="*",
                Metadata={"sha256": sha256},
                **self._extra,
            )
        except ClientError as exc:
            if error_code(exc) not in _TAKEN_CODES:
                raise self._error(exc, "writing", key) from exc
            self._settle_taken(key, sha256, exc)
        except BotoCoreError as exc:
            raise self._error(exc, "writing", key) from exc

    def check_commit(self) -> None:
        """Prove the server refuses to overwrite: the commit rule rests on it.

        Writes the same small probe object twice with ``If-None-Match: *``; the second
        must be refused. A server that ignores the header would let two writers replace
        each other's files silently, so the archiver will not write to it.
        """
        key = self._key(PROBE_KEY)
        refused = 0
        for _ in range(2):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=PROBE_BODY, IfNoneMatch="*", **self._extra
                )
            except ClientError as exc:
                if error_code(exc) not in _TAKEN_CODES:
                    raise self._error(exc, "probing", PROBE_KEY) from exc
                refused += 1
            except BotoCoreError as exc:
                raise self._error(exc, "probing", PROBE_KEY) from exc
        if refused == 0:
            raise StoreError(
                f"the S3 server at {self.describe()} overwrites objects despite If-None-Match",
                hint="use a server with conditional writes (AWS S3, MinIO, Ceph, SeaweedFS 4.x)",
            )

    def _settle_taken(self, key: str, sha256: str, cause: ClientError) -> None:
        """A conditional write failed: was the object already ours?

        Botocore retries a request whose response was lost; the retry then finds our
        own object. Same sha256: success. Different: another writer's, AlreadyExists.
        """
        stored = self._stored_sha256(key)
        if stored is None:
            # 409 (a racing write that then failed) or an upload that vanished:
            # nothing is committed, and the caller may simply try again.
            raise StoreError(
                f"writing {self._where(key)} failed ({error_code(cause)}) and left no object",
                hint="another writer raced for this key; retry",
            ) from cause
        if stored != sha256:
            raise AlreadyExists(f"{self._where(key)} already exists with different content")

    def _stored_sha256(self, key: str) -> str | None:
        """The sha256 an object was written with ("" if none); None if it is missing."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if http_status(exc) == 404:
                return None
            raise self._error(exc, "checking", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "checking", key) from exc
        return head.get("Metadata", {}).get("sha256", "")

    def _put_multipart(self, key: str, path: Path, size: int, sha256: str) -> None:
        upload_id = self._create_upload(key, sha256)
        try:
            parts = self._upload_parts(key, upload_id, path, self._part_size(size))
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except ClientError as exc:
            self._abort(key, upload_id)
            # NoSuchUpload: a retried Complete whose first attempt had succeeded.
            if error_code(exc) not in _TAKEN_CODES | {"NoSuchUpload"}:
                raise self._error(exc, "uploading", key) from exc
            self._settle_taken(key, sha256, exc)
            return
        except BaseException as exc:
            # Incomplete uploads cost money until aborted, whatever went wrong.
            self._abort(key, upload_id)
            if isinstance(exc, BotoCoreError):
                raise self._error(exc, "uploading", key) from exc
            if isinstance(exc, OSError):
                raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
            raise
        self._verify_completed(key, sha256)

    def _part_size(self, size: int) -> int:
        """The configured part size, or more for a file that would exceed 10,000 parts."""
        return max(self.options.part_size, -(-size // _MAX_PARTS))

    def _create_upload(self, key: str, sha256: str) -> str:
        try:
            upload = self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                Metadata={"sha256": sha256},
                **self._extra,
            )
        except _BotoError as exc:
            raise self._error(exc, "starting an upload of", key) from exc
        return upload["UploadId"]

    def _verify_completed(self, key: str, sha256: str) -> None:
        """Read the digest back after a multipart upload that reported success.

        Some servers (SeaweedFS 4.48) honour If-None-Match on CompleteMultipartUpload
        but not atomically: racing completes can all succeed, the last one winning.
        This catches most such silent losses; on AWS, MinIO or Ceph it always passes.
        """
        if self._stored_sha256(key) != sha256:
            raise AlreadyExists(
                f"{self._where(key)} was replaced by a concurrent writer's upload",
                hint="the S3 server does not make conditional multipart completion atomic",
            )

    def _upload_parts(
        self, key: str, upload_id: str, path: Path, part_size: int
    ) -> list[CompletedPartTypeDef]:
        """Upload the file one part at a time, so memory holds at most one part."""
        parts: list[CompletedPartTypeDef] = []
        with path.open("rb") as f:
            while chunk := f.read(part_size):
                number = len(parts) + 1
                response = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
                failpoints.hit("mid-upload")
        return parts

    def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: the original error matters more than a failed abort."""
        with suppress(*_BotoError):
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
            )

    def get_bytes(self, key: str) -> bytes:
        """The whole object."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with closing(response["Body"]) as body:
                return body.read()
        except _BotoError as exc:
            raise self._error(exc, "reading", key) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A byte range of the object (HTTP Range request)."""
        if length <= 0:
            return b""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            with closing(response["Body"]) as body:
                return body.read()
        except _BotoError as exc:
            raise self._error(exc, "reading", key) from exc

    def download(self, key: str, path: Path) -> None:
        """Stream the object to ``path`` in chunks; no partial file is left on failure."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with closing(response["Body"]) as body, path.open("wb") as f:
                for chunk in body.iter_chunks(_CHUNK):
                    f.write(chunk)
        except _BotoError as exc:
            path.unlink(missing_ok=True)
            raise self._error(exc, "downloading", key) from exc
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, sorted by key.

        AWS lists in UTF-8 byte order, which is key order, but some compatible servers
        (SeaweedFS) list directory by directory and return "a/b" before "a-b". Sorting
        keeps the contract everywhere, at the cost of holding one listing in memory.
        """
        paginator = self._client.get_paginator("list_objects_v2")
        cut = len(self._prefix)
        found: builtins.list[ObjectInfo] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                contents = page.get("Contents", [])
                found.extend(ObjectInfo(o["Key"][cut:], o["Size"]) for o in contents)
        except _BotoError as exc:
            raise self._error(exc, "listing", prefix) from exc
        found.sort(key=lambda info: info.key)
        return iter(found)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """The common prefixes one ``/`` below ``prefix``."""
        paginator = self._client.get_paginator("list_objects_v2")
        cut = len(self._prefix)
        dirs: builtins.list[str] = []
        try:
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self._key(prefix), Delimiter="/"
            ):
                dirs.extend(p["Prefix"][cut:] for p in page.get("CommonPrefixes", []))
        except _BotoError as exc:
            raise self._error(exc, "listing", prefix) from exc
        return sorted(dirs)

    def delete(self, key: str) -> None:
        """DeleteObject; a missing key is not an error."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _BotoError as exc:
            raise self._error(exc, "deleting", key) from exc
