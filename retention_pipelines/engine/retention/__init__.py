"""A retention run: find what is due, archive it, act on it (delete or redact), audit it; the domain's
table, pacing, lanes, the fence, blobs, archive expiry, restore and retries."""
