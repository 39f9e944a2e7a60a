"""Archive stores: a local directory, S3-compatible object storage, and memory (tests)."""

from archiver.store.base import ObjectInfo, Store
from archiver.store.open import open_store
from archiver.store.options import S3Options

__all__ = ["ObjectInfo", "S3Options", "Store", "open_store"]
