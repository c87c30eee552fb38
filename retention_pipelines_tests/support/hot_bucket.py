"""Meal plans' PDFs in the hot bucket (moto's S3): put there by a test, and listed back."""

from __future__ import annotations

import boto3

PDF = b"%PDF-1.4\n% a meal plan\n%%EOF\n"


def put_pdfs(bucket: str, keys: list[str]) -> None:
    client = boto3.client("s3")
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=PDF + key.encode())


def hot_keys(bucket: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}
