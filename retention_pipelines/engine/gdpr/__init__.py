"""GDPR erasure: the request book, the erasure run across domains, the upgrade of legacy archives."""
