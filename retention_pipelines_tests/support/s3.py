"""Real boto3 clients (on moto's server) with one behaviour changed, for the failures a test needs."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import boto3
from botocore.exceptions import EndpointConnectionError


class MisstoringS3:
    """Stores other bytes than it is sent under the keys that end with one of `bad_endings`, and
    answers with their digests, as S3 does when bytes change on the way (its checksum is checked
    against what arrived): the copy does not match. `heads` counts HeadObject calls."""

    def __init__(self, bad_endings=(), client=None):
        self.client, self.bad_endings, self.heads = client or boto3.client("s3"), tuple(bad_endings), 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def put_object(self, **kwargs):
        if self.bad_endings and kwargs["Key"].endswith(self.bad_endings):
            body = kwargs["Body"] + b" altered"
            checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
            kwargs = {**kwargs, "Body": body, "ChecksumSHA256": checksum}
        return self.client.put_object(**kwargs)

    def upload_part(self, **kwargs):
        if self.bad_endings and kwargs["Key"].endswith(self.bad_endings) and kwargs["PartNumber"] == 1:
            body = kwargs["Body"][:-1] + bytes([kwargs["Body"][-1] ^ 0x01])
            checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
            kwargs = {**kwargs, "Body": body, "ChecksumSHA256": checksum}
        return self.client.upload_part(**kwargs)

    def head_object(self, **kwargs):
        self.heads += 1
        return self.client.head_object(**kwargs)


class DigestlessS3(MisstoringS3):
    """As MisstoringS3, but its PUT answers carry no digest (as a store that keeps no checksum
    and gives no MD5 ETag): a copy has to be verified another way."""

    def put_object(self, **kwargs):
        answer = super().put_object(**kwargs)
        return {key: value for key, value in answer.items() if key not in ("ChecksumSHA256", "ETag")}

    def complete_multipart_upload(self, **kwargs):
        answer = self.client.complete_multipart_upload(**kwargs)
        return {key: value for key, value in answer.items() if key not in ("ChecksumSHA256", "ETag")}


class SlowReadsS3:
    """Each GetObject waits `seconds` first; `most` is the most that were in flight at once."""

    def __init__(self, client, seconds: float = 0.05):
        self.client, self.seconds = client, seconds
        self.lock, self.in_flight, self.most = threading.Lock(), 0, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def get_object(self, **kwargs):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.seconds)
            return self.client.get_object(**kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1


class FlakyS3:
    """A real boto3 client whose DeleteObjects fails for chosen keys: `forever` keys get
    AccessDenied on every try, `once` keys a SlowDown the first time only."""

    def __init__(self, forever=(), once=()):
        self.client = boto3.client("s3")
        self.forever, self.once, self.calls = set(forever), set(once), 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def delete_objects(self, Bucket, Delete):
        self.calls += 1
        failing = {o["Key"]: "AccessDenied" for o in Delete["Objects"] if o["Key"] in self.forever}
        failing.update({o["Key"]: "SlowDown" for o in Delete["Objects"] if o["Key"] in self.once})
        self.once.clear()
        kept = [o for o in Delete["Objects"] if o["Key"] not in failing]
        if kept:
            self.client.delete_objects(Bucket=Bucket, Delete={"Objects": kept, "Quiet": True})
        return {"Errors": [{"Key": k, "Code": c, "Message": c} for k, c in failing.items()]}


class CutOffUploadsS3:
    """A real boto3 client whose multipart uploads stop at their second part: with `killed`, as a
    process killed there leaves them (no abort reaches S3), else with an error, aborted."""

    def __init__(self, killed: bool):
        self.client, self.killed, self.aborted = boto3.client("s3"), killed, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def upload_part(self, **kwargs):
        if kwargs["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url=self.client.meta.endpoint_url)
        return self.client.upload_part(**kwargs)

    def abort_multipart_upload(self, **kwargs):
        if not self.killed:
            self.aborted += 1
            return self.client.abort_multipart_upload(**kwargs)
        return {}
