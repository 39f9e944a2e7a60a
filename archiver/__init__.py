"""nats-archiver: archive NATS JetStream streams to Parquet, replay and verify them."""

__version__ = "0.1.0"
SCHEMA_VERSION = "2"

__all__ = ["SCHEMA_VERSION", "__version__"]
