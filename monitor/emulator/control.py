"""A small client for the emulator's control API (faults, ground truth, reset)."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["ControlClient", "ControlError"]


class ControlError(Exception):
    """The emulator refused a control request or could not be reached."""


class ControlClient:
    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"{self.endpoint}/gtmon/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("error", detail)
            raise ControlError(f"{self.endpoint}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlError(f"cannot reach the emulator at {self.endpoint}: {reason}") from None

    def state(self) -> Any:
        return self._call("GET", "state")

    def truth(self, table: str | None = None) -> Any:
        return self._call("GET", "truth" + (f"?table={table}" if table else ""))

    def fault(self, action: str, **params: Any) -> Any:
        body = {k: v for k, v in params.items() if v is not None}
        return self._call("POST", f"fault/{action}", body)

    def reset(self) -> Any:
        return self._call("POST", "reset")
