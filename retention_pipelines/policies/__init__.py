"""The policy file: its model and its loader."""

from retention_pipelines.policies.loader import PolicyError, default_policy_path, load_policies
from retention_pipelines.policies.model import DomainPolicy, PolicyFile

__all__ = ["DomainPolicy", "PolicyError", "PolicyFile", "default_policy_path", "load_policies"]
