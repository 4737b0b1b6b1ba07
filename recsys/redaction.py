"""Secrets masked in connection strings and URIs, for messages, logs and recorded settings."""

from __future__ import annotations

import re

SECRET_KEYS = ("password", "username", "user", "ssl_password")  # Redis connection-string options


def redact(text: str) -> str:
    """A connection string or URI with its secrets masked: ``password=***`` options (Redis's
    ``host:port,password=...``) and the password of a URI's ``user:password@`` part."""
    parts = []
    for part in text.split(","):
        key, sep, _ = part.partition("=")
        parts.append(f"{key}=***" if sep and key.strip().lower() in SECRET_KEYS else part)
    text = ",".join(parts)
    return re.sub(r"(?<=://)([^/@:\s]*):([^/@\s]*)@", r"\1:***@", text)
