"""The boto3 client for S3 and the translation of its errors into one ``StoreError`` line.

Credentials come only from the standard AWS chain; no message ever carries a secret.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from archiver.errors import StoreError, UsageError
from archiver.store.options import S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CHAIN_HINT = (
    "credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity (IRSA), pod identity or an "
    "instance role"
)
_ENDPOINT_HINT = "check --s3-endpoint / AWS_ENDPOINT_URL"
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
    }
)


def redact(url: str) -> str:
    """The endpoint without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def make_client(options: S3Options) -> S3Client:
    """A boto3 S3 client configured from ``options``; credentials from the AWS chain."""
    checksum = cast(Literal["when_supported", "when_required"], options.checksum)
    config = Config(
        region_name=options.region,
        s3={"addressing_style": cast(Literal["auto", "virtual", "path"], options.addressing_style)},
        request_checksum_calculation=checksum,
        response_checksum_validation=checksum,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        # total_max_attempts counts the first try; plain "max_attempts" would not.
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
    )
    try:
        return _session().client("s3", endpoint_url=options.endpoint_url, config=config)
    except ValueError as exc:  # botocore's "Invalid endpoint", also from AWS_ENDPOINT_URL
        raise UsageError(
            f"the S3 endpoint is not a URL: {exc}",
            hint="give it with its scheme, e.g. --s3-endpoint https://s3.example.com:9000",
        ) from exc


def _session() -> boto3.session.Session:
    """A fresh session per store: a shared one would cache credentials process-wide
    (across stores, and across tests that change them). Only the parsed API models
    are shared, which makes a second store ~5x cheaper to create.
    """
    core = botocore.session.Session()
    core.register_component("data_loader", _shared_loader())
    return boto3.session.Session(botocore_session=core)


@functools.cache
def _shared_loader() -> Any:
    return botocore.session.Session().get_component("data_loader")


def translate(
    exc: Exception, doing: str, bucket: str, endpoint: str, where: str, bucket_call: bool
) -> StoreError:
    """One clear line for a botocore error, never with a secret in it: ``doing`` what to
    ``where`` (an object, or the bucket for a bucket-level call)."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return StoreError("no usable AWS credentials found", hint=_CHAIN_HINT)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return StoreError(f"cannot reach S3 endpoint {endpoint}", hint=_ENDPOINT_HINT)
    if isinstance(exc, ReadTimeoutError):
        return StoreError(f"S3 endpoint {endpoint} timed out while {doing} {where}")
    if isinstance(exc, ClientError):
        return _client_error(exc, doing, bucket, endpoint, where, bucket_call)
    return StoreError(f"S3 {doing} {where} failed: {one_line(exc)}")


def _client_error(
    exc: ClientError, doing: str, bucket: str, endpoint: str, where: str, bucket_call: bool
) -> StoreError:
    code, status = error_code(exc), http_status(exc)
    if code in _CREDENTIAL_CODES:
        return StoreError(f"S3 at {endpoint} rejected the credentials ({code})", hint=_CHAIN_HINT)
    if code == "NoSuchBucket" or (status == 404 and bucket_call):
        return StoreError(
            f"bucket {bucket} does not exist at {endpoint}",
            hint="the archiver never creates buckets; create it first",
        )
    if code == "NoSuchKey" or status == 404:
        return StoreError(f"{where} does not exist")
    if code in ("AccessDenied", "403") or status == 403:
        return StoreError(
            f"S3 at {endpoint} refused access to {where} ({code}): "
            "the credentials are wrong or lack permission",
            hint=_CHAIN_HINT,
        )
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
        return StoreError(
            f"bucket {bucket} is in another region ({code})",
            hint="set --s3-region / AWS_REGION to the bucket's region",
        )
    message = one_line(exc.response.get("Error", {}).get("Message", ""))
    return StoreError(f"S3 {doing} {where} failed: {status} {code} {message}".rstrip())
