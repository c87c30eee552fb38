"""The boto3 S3 client the stores share, and how many requests one client may have in flight."""

from __future__ import annotations

# Connections a store's client keeps open to S3: the engine runs this many object requests side
# by side (split between the batches in flight). botocore's default is 10; past the pool's size
# urllib3 opens a connection per request and throws it away ("Connection pool is full"), so the
# thread count and the pool are sized together, here.
S3_POOL_CONNECTIONS = 32


def s3_client():
    """A boto3 S3 client (thread-safe: a store's threads share it). botocore's standard retry
    mode handles throttling and transient errors with backoff; AWS_ENDPOINT_URL points it at an
    S3-compatible store."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                                            read_timeout=60, max_pool_connections=S3_POOL_CONNECTIONS))


def pool_connections(client) -> int:
    """The size of a client's connection pool: as many requests as it may run at once, whoever
    made it (a client passed in by a caller keeps its own setting)."""
    return client.meta.config.max_pool_connections
