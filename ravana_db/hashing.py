"""The content hash that deduplicates text: what `log`, feeds and the index compare."""

import hashlib


def sha256(text):
    """The content hash used for deduplication: SHA-256 of the UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
