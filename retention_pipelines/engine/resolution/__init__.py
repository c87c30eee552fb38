"""Resolving manual-queue items: each is retried through the engine its kind belongs to (a retention
run, the archive expiry, an erasure), so this sits above all of them."""
