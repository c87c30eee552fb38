"""What the deployment guide's AWS keys may do (deploy/aws/) and the locks' Redis on Kubernetes
(deploy/k8s/redis.yaml): each grants what the stores call and nothing beyond, and each name the
guide uses is the one the files define."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
GUIDE = (REPOSITORY / "docs" / "deploy.md").read_text()
ARCHIVE, PDFS, COMPUTE_LOGS = "acme-retention-archive", "acme-app-pdfs", "acme-dagster-compute-logs"


def grants(policy_file: str) -> dict[str, set[str]]:
    """{resource ARN: actions allowed on it}; every statement an Allow."""
    policy = json.loads((REPOSITORY / "deploy" / "aws" / policy_file).read_text())
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            granted.setdefault(resource, set()).update(statement["Action"])
    return granted


def test_the_code_locations_key_does_what_the_stores_call_on_each_bucket():
    granted = grants("retention-code-policy.json")
    # Archive: written (with its Object Lock retention; a large PDF's copy by a multipart upload, aborted
    # when it fails), read back to verify, expired after keep_for, its lock read before a delete.
    assert granted[f"arn:aws:s3:::{ARCHIVE}/*"] == {
        "s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:PutObjectRetention", "s3:GetObjectRetention",
        "s3:GetObjectLegalHold", "s3:AbortMultipartUpload"}
    # PDFs: read, deleted, and written back by a restore (a large one by a multipart upload).
    assert granted[f"arn:aws:s3:::{PDFS}/*"] == {"s3:GetObject", "s3:DeleteObject", "s3:PutObject",
                                                  "s3:AbortMultipartUpload"}
    assert granted[f"arn:aws:s3:::{COMPUTE_LOGS}/*"] == {"s3:PutObject", "s3:GetObject"}
    # The archive's versions are listed too: an audit anchor in more than one version was written over.
    assert granted[f"arn:aws:s3:::{ARCHIVE}"] == {"s3:ListBucket", "s3:ListBucketVersions"}
    for bucket in (PDFS, COMPUTE_LOGS):
        assert granted[f"arn:aws:s3:::{bucket}"] == {"s3:ListBucket"}
    assert not [action for actions in granted.values() for action in actions if "*" in action or
                action.startswith("s3:Bypass")], "no wildcard action, and no way around an Object Lock"


def test_the_compute_log_key_reaches_the_compute_log_bucket_only():
    granted = grants("compute-logs-policy.json")
    assert granted == {f"arn:aws:s3:::{COMPUTE_LOGS}/*": {"s3:PutObject", "s3:GetObject"},
                       f"arn:aws:s3:::{COMPUTE_LOGS}": {"s3:ListBucket"}}


def test_the_guide_names_the_policy_files_and_buckets_that_exist():
    for path in re.findall(r"file://(deploy/aws/[\w.-]+)", GUIDE):
        assert (REPOSITORY / path).is_file(), path
    assert len(re.findall(r"file://deploy/aws/", GUIDE)) == 2
    for bucket in (ARCHIVE, PDFS, COMPUTE_LOGS):
        assert bucket in GUIDE, bucket


def test_the_locks_redis_never_evicts_runs_once_and_answers_at_the_url_the_guide_gives():
    deployment, service, network = yaml.safe_load_all((REPOSITORY / "deploy" / "k8s" / "redis.yaml").read_text())
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # never two lock servers at once
    [container] = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert service["kind"] == "Service" and service["spec"]["ports"][0]["port"] == 6379
    assert network["kind"] == "NetworkPolicy" and network["spec"]["podSelector"]["matchLabels"] == {
        "app": service["metadata"]["name"]}
    [url] = re.findall(r"RETENTION_REDIS_URL=(redis://[^\s\\]+)", GUIDE)
    assert url == f"redis://{service['metadata']['name']}:6379/0"
    assert "kubectl -n retention apply -f deploy/k8s/redis.yaml" in GUIDE
