"""The audit log's hash chain (seal, verify, anchor) and the evidence index by record."""
