"""Talking to NATS: connection, protocol parser, JetStream API, readers, publisher.

Everything here leans on nats-py's internals; nothing above it does."""
