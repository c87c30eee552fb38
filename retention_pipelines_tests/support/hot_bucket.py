"""Meal plans' PDFs in the hot bucket (moto's S3): put there by a test, and listed back."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import boto3

from retention_pipelines.stores.s3 import put_streamed, read_streamed

PDF = b"%PDF-1.4\n% a meal plan\n%%EOF\n"


def put_pdfs(bucket: str, keys: list[str]) -> None:
    client = boto3.client("s3")
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=PDF + key.encode())


def hot_keys(bucket: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def large_pdf(size: int, seed: int = 0, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """A PDF of `size` bytes made a chunk at a time, the same for the same seed: a test never
    holds a large one whole."""
    made = random.Random(seed)
    yield b"%PDF-1.7\n"[:size]
    left = size - min(size, 9)
    while left:
        piece = made.randbytes(min(chunk, left))
        left -= len(piece)
        yield piece


def put_large_pdf(bucket: str, key: str, size: int, seed: int = 0) -> str:
    """A large PDF in the hot bucket (a multipart upload, as the app writes one); its sha256."""
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for piece in large_pdf(size, seed):
            digest.update(piece)
            yield piece

    put_streamed(boto3.client("s3"), bucket, key, hashed())
    return digest.hexdigest()


def stored_sha256(bucket: str, key: str) -> str:
    """The sha256 of an object in a bucket, read a chunk at a time."""
    digest = hashlib.sha256()
    for piece in read_streamed(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]):
        digest.update(piece)
    return digest.hexdigest()
