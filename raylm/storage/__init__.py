"""Where runs live: a local path, a shared mount or an object-store URI, through one layer over pyarrow.fs.

- ``location.StoragePath``: join, read/write text/json/bytes, exists, list, upload/download trees, delete;
- ``commit``: publish a directory with a marker written last (``_COMMITTED``, sizes + sha256);
  readers trust only committed files; a content-keyed local cache for downloads;
- ``workspace``: a URI run's local scratch, published at each stage and deleted at the end.
See docs/storage.md.
"""

from raylm.storage.commit import MARKER, NotCommitted, cache_root, cached_tree, committed, fetch, publish
from raylm.storage.location import StoragePath, StorageURIError, check_uri, is_uri
from raylm.storage.workspace import localize, public_paths, publish_workspace, run_view, run_workspace, scratch_dir, stored

__all__ = ["MARKER", "NotCommitted", "StoragePath", "StorageURIError", "cache_root", "cached_tree", "check_uri",
           "committed", "fetch", "is_uri", "localize", "public_paths", "publish", "publish_workspace",
           "run_view", "run_workspace", "scratch_dir", "stored"]
