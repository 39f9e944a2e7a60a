"""The archive as one Arrow dataset: every committed data file, local or in S3.

Files are opened through the store, by byte range (``RangeFile``), so a query engine
given the dataset (DuckDB, polars, DataFusion) reads footers and only the row groups and
columns it needs, with no S3 extension to download and no credentials of its own. The
``stream`` and ``date`` partitions come from the paths (Hive flavour: escaped names
decode back to the NATS names) and prune files before they are opened.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from archiver.errors import StoreError
from archiver.format import catalog
from archiver.format.schema import SCHEMA
from archiver.store.base import Store
from archiver.store.rangefile import RangeFile

PARTITIONS = pa.schema([("stream", pa.string()), ("date", pa.string())])
DATASET_SCHEMA = pa.unify_schemas([SCHEMA, PARTITIONS])
"""What a query sees: the columns, then the partitions. Files of schema version 1 read
with ``seq`` cast to int64 and ``generation`` null."""


def archive_dataset(store: Store, streams: list[str], failures: list[StoreError]) -> Any:
    """The committed data files of ``streams`` as one ``pyarrow.dataset.Dataset``.

    A store error met while an engine reads lands in ``failures``: the engine reports
    it as its own error, and the caller should report ours instead.
    """
    sizes = {f.key: f.size for s in streams for f in catalog.data_files(store, s)}
    return ds.dataset(
        sorted(sizes),
        schema=DATASET_SCHEMA,
        format="parquet",
        filesystem=pafs.PyFileSystem(_StoreFiles(_Noting(store, failures), sizes)),
        partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
        partition_base_dir="",
    )


class _Noting:
    """The store's ranged reads, noting a failure before it turns into the engine's."""

    def __init__(self, store: Store, failures: list[StoreError]) -> None:
        self.store = store
        self.failures = failures

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            return self.store.get_range(key, start, length)
        except StoreError as exc:
            self.failures.append(exc)
            raise


def _read_only(*args: object, **kwargs: object) -> NoReturn:
    raise NotImplementedError("the archive is read through this file system, never written")


class _StoreFiles(pafs.FileSystemHandler):  # type: ignore[misc]
    """The listed files of a store, read-only, for pyarrow's ``PyFileSystem``."""

    def __init__(self, store: _Noting, sizes: dict[str, int]) -> None:
        self.store = store
        self.sizes = sizes

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def get_type_name(self) -> str:
        return "archiver"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[Any]:
        return [
            pafs.FileInfo(p, pafs.FileType.File, size=self.sizes[p])
            if p in self.sizes
            else pafs.FileInfo(p, pafs.FileType.NotFound)
            for p in paths
        ]

    def get_file_info_selector(self, selector: Any) -> list[Any]:
        return [pafs.FileInfo(p, pafs.FileType.File, size=n) for p, n in self.sizes.items()]

    def open_input_file(self, path: str) -> Any:
        file = RangeFile(self.store, path, self.sizes[path])  # type: ignore[arg-type]
        return pa.PythonFile(file, mode="r")

    def open_input_stream(self, path: str) -> Any:
        return self.open_input_file(path)

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only
