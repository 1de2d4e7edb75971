"""Typed registry errors, one class per error code of the OCI Distribution Specification.

Domain code raises these; `cargobay.api.errors` renders them as the spec's JSON error envelope.
Each class carries its code and usual HTTP status; an instance may override the status where the
spec uses one code with several statuses (BLOB_UPLOAD_INVALID is 400 or 416).
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryError(Exception):
    code: ClassVar[str] = "UNSUPPORTED"
    status: int = 400
    default_message: ClassVar[str] = "the operation is unsupported"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = headers or {}
        super().__init__(self.message)


class BlobUnknown(RegistryError):
    code = "BLOB_UNKNOWN"
    status = 404
    default_message = "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code = "BLOB_UPLOAD_INVALID"
    status = 400
    default_message = "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code = "BLOB_UPLOAD_UNKNOWN"
    status = 404
    default_message = "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code = "DIGEST_INVALID"
    status = 400
    default_message = "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code = "MANIFEST_BLOB_UNKNOWN"
    status = 400
    default_message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code = "MANIFEST_INVALID"
    status = 400
    default_message = "manifest invalid"


class ManifestUnknown(RegistryError):
    code = "MANIFEST_UNKNOWN"
    status = 404
    default_message = "manifest unknown to registry"


class NameInvalid(RegistryError):
    code = "NAME_INVALID"
    status = 400
    default_message = "invalid repository name"


class NameUnknown(RegistryError):
    code = "NAME_UNKNOWN"
    status = 404
    default_message = "repository name not known to registry"


class SizeInvalid(RegistryError):
    code = "SIZE_INVALID"
    status = 400
    default_message = "provided length did not match content length"


class Unauthorized(RegistryError):
    code = "UNAUTHORIZED"
    status = 401
    default_message = "authentication required"


class Denied(RegistryError):
    code = "DENIED"
    status = 403
    default_message = "requested access to the resource is denied"


class Unsupported(RegistryError):
    code = "UNSUPPORTED"
    status = 400
    default_message = "the operation is unsupported"


class TooManyRequests(RegistryError):
    code = "TOOMANYREQUESTS"
    status = 429
    default_message = "too many requests"


class TagInvalid(RegistryError):
    """A malformed tag. The spec has no code of its own for it; distribution answers
    MANIFEST_INVALID for a bad reference, and so do we."""

    code = "MANIFEST_INVALID"
    status = 400
    default_message = "invalid tag"


class ManifestTooLarge(RegistryError):
    code = "MANIFEST_INVALID"
    status = 413
    default_message = "manifest too large"


class RangeInvalid(BlobUploadInvalid):
    """A chunk that does not start where the upload ends: 416 with the current Range."""

    status = 416
    default_message = "chunk out of order: the upload does not end where this chunk starts"


class RangeNotSatisfiable(RegistryError):
    """A blob GET Range outside the blob. The spec has no code for it."""

    code = "UNSUPPORTED"
    status = 416
    default_message = "requested range not satisfiable"


class BodyTimeout(RegistryError):
    """The client stopped sending its request body, or trickles it. The spec has no code."""

    code = "BLOB_UPLOAD_INVALID"
    status = 408
    default_message = "request body too slow"


class Unavailable(RegistryError):
    """A backing service (metadata database, object store) cannot be reached. Drivers raise it
    for connection failures so that clients get a clear, retryable 503 instead of a 500;
    distribution uses the same code."""

    code = "UNAVAILABLE"
    status = 503
    default_message = "service unavailable: a backing store cannot be reached, retry later"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


class StorageFull(Unavailable):
    """The disk (or quota) under blob storage or the metadata database is full. 507
    Insufficient Storage says what happened; the code is distribution's UNAVAILABLE."""

    status = 507
    default_message = "no space left on the registry's storage"
