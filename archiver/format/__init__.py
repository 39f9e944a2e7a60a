"""The archive's long-lived format: object keys, batches, the Parquet schema, writer
and reader, gap records and the catalog of what the archive holds."""
