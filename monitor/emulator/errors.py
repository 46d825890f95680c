"""Errors the emulator answers with, in the shape AWS uses on the wire."""

from __future__ import annotations

import json

__all__ = ["AwsError"]


class AwsError(Exception):
    """An AWS JSON-protocol error: `__type` code, message, HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> bytes:
        return json.dumps(
            {"__type": f"com.amazonaws.dynamodb.v20120810#{self.code}", "message": self.message}
        ).encode()
