"""The S3 layer: everything objmig says to an S3-compatible store goes through here.

Table of contents:

- `endpoint`: `Endpoint`, `Credentials`, `same_store`;
- `store`: `open_store`, one side's clients; `s3http` (the per-object requests and plain
  listings) and `sdk` (aioboto3, loaded on first use, for everything else);
- `types`: the value types (`HeadResult`, `ObjectInfo`, `PartLayout`, ...) and the pure
  helpers that read S3's spellings of them (ETags, version ids, checksums);
- `bucket`: the SDK's listings (`list_objects`), `delete_objects`, multipart upload
  listing and abort;
- `parts`: part layouts (`resolve_part_layout`); `digest`: `object_sha256`;
- `selection`: pure key/date/size/class filters and metadata rules;
- `manifest`: worklists from plain lists, CSV, S3 Inventory and ConfigMaps;
- `restore`: archived objects (`needs_restore`, `request_restore`, `x-amz-restore`);
- `copy`: `copy_object`, server-side or streamed, keeping part boundaries;
- `errors`: `classify` maps any failure onto what the engine should do;
- `ratelimit`, `streaming`: bandwidth limiting and the streaming machinery of `copy`.

This package does not import `objmig.api`: the engine maps the CRD spec onto the small
dataclasses defined here.
"""

from objmig.storage.bucket import (
    abort_multipart_upload,
    delete_objects,
    list_multipart_uploads,
    list_objects,
)
from objmig.storage.copy import (
    CopyOptions,
    CopyResult,
    Encryption,
    ObjectArchivedError,
    SourceObject,
    TargetObject,
    copy_object,
)
from objmig.storage.digest import object_sha256
from objmig.storage.endpoint import Credentials, Endpoint, same_store
from objmig.storage.errors import ErrorClass, StorageError, classify
from objmig.storage.parts import part_layout
from objmig.storage.restore import needs_restore, request_restore
from objmig.storage.selection import MetadataRule, Selection, metadata_matches
from objmig.storage.types import (
    DeleteResult,
    HeadResult,
    MultipartUploadInfo,
    ObjectInfo,
    RestoreStatus,
)

__all__ = [
    "CopyOptions",
    "CopyResult",
    "Credentials",
    "DeleteResult",
    "Encryption",
    "Endpoint",
    "ErrorClass",
    "HeadResult",
    "MetadataRule",
    "MultipartUploadInfo",
    "ObjectArchivedError",
    "ObjectInfo",
    "RestoreStatus",
    "Selection",
    "SourceObject",
    "StorageError",
    "TargetObject",
    "abort_multipart_upload",
    "classify",
    "copy_object",
    "delete_objects",
    "list_multipart_uploads",
    "list_objects",
    "metadata_matches",
    "needs_restore",
    "object_sha256",
    "part_layout",
    "request_restore",
    "same_store",
]
