"""Copying one object: server-side or streamed, keeping part boundaries (and so ETags).

Two paths, chosen by `CopyOptions.server_side`:

- **server-side** (source and target in one store, one identity): CopyObject for
  single-part objects, and for multipart objects one UploadPartCopy per source part, with
  the same byte ranges. Any size works (CopyObject stops at 5 GiB, UploadPartCopy does not),
  and the target's multipart ETag equals the source's because each part has the same bytes.
- **streamed** (anything else): the source read by GET and piped into UploadParts of the
  source's part sizes (PutObject for single-part objects). A multipart object is read with
  one GET, front to back; up to `part_concurrency` parts upload at once, the parts after
  the one streaming being read into memory as far as the process's `ReadAhead` budget
  allows, and streamed straight from the GET when it has no room. So memory is bounded by
  that budget plus a chunk per stream, whatever the object size, and a SHA-256 of the
  whole object is taken as the bytes pass, in order.

Both paths refuse with `SourceChangedError` a source that no longer has the scanned ETag
and size (a streamed single-part object learns that from the GET that reads it, the others
from a HEAD), then pin the version and ETag (If-Match / x-amz-copy-source-if-match) for every
read, so an object overwritten mid-copy fails the copy instead of mixing versions. A
multipart upload that fails or is cancelled is aborted before the error propagates.

Requests go through `s3http.S3HttpClient`, not botocore: at one to five requests per small
object, botocore's per-request CPU was the limit of the whole copy (see that module).

Modules: `route` (`copy_object`: look at the source, plan, take a path), `planning`,
`server_side`, `streamed`, `multipart` (the upload frame both paths share), `model` (what
a copy is asked and answers).
"""

from objmig.storage.copy.model import (
    CopyOptions,
    CopyResult,
    Encryption,
    MetadataTooLargeError,
    ObjectArchivedError,
    SourceObject,
    TargetExistsError,
    TargetObject,
)
from objmig.storage.copy.multipart import run_bounded
from objmig.storage.copy.route import copy_object

__all__ = [
    "CopyOptions",
    "CopyResult",
    "Encryption",
    "MetadataTooLargeError",
    "ObjectArchivedError",
    "SourceObject",
    "TargetExistsError",
    "TargetObject",
    "copy_object",
    "run_bounded",
]
