"""Archive stores: a local directory, S3-compatible object storage, and memory (tests)."""

from archiver.store.base import ObjectInfo, Store
from archiver.store.open import S3Options, open_store

__all__ = ["ObjectInfo", "S3Options", "Store", "open_store"]
