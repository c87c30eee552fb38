"""The archive: the encrypted JSON-lines format and the keys that wrap each subject's data key."""
