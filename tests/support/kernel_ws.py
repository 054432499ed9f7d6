"""A minimal Jupyter kernel client over Jupyter Server's websocket, as JupyterLab talks.

``POST /api/kernels`` starts a kernel; ``/api/kernels/{id}/channels`` is the websocket that
carries the Jupyter messaging protocol as JSON text frames (one frame per message, the
channel named in it). Only what timing executes needs: send ``execute_request``, read until
its ``execute_reply``.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any


def start_kernel(port: int, token: str) -> str:
    """A new kernel's id (the server's default kernel spec)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            f"/api/kernels?token={token}",
            "{}",
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            raise AssertionError(f"POST /api/kernels answered {response.status}: {body[:200]!r}")
        return str(json.loads(body)["id"])
    finally:
        conn.close()


class KernelChannel:
    """One websocket to one kernel; `execute` returns the seconds to its reply."""

    def __init__(self, port: int, token: str, kernel_id: str) -> None:
        import websocket

        self.session = uuid.uuid4().hex
        self.ws: Any = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels"
            f"?session_id={self.session}&token={token}",
            timeout=120,
        )

    def execute(self, code: str) -> float:
        return self._execute(code, [])

    def output(self, code: str) -> str:
        """What `code` printed on stdout in the kernel (its execute_reply must be ok)."""
        printed: list[str] = []
        self._execute(code, printed)
        return "".join(printed)

    def _execute(self, code: str, printed: list[str]) -> float:
        msg_id = uuid.uuid4().hex
        message = {
            "header": {
                "msg_id": msg_id,
                "username": "orchestrate-test",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "channel": "shell",
            "buffers": [],
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        }
        began = time.perf_counter()
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            mine = reply.get("parent_header", {}).get("msg_id") == msg_id
            stream = reply.get("msg_type") == "stream"
            if mine and stream and reply["content"].get("name") == "stdout":
                printed.append(reply["content"].get("text", ""))
            if (
                reply.get("parent_header", {}).get("msg_id") == msg_id
                and reply.get("msg_type") == "execute_reply"
            ):
                status = reply["content"]["status"]
                if status != "ok":
                    raise AssertionError(f"{code!r} answered {status}: {reply['content']}")
                return time.perf_counter() - began

    def close(self) -> None:
        self.ws.close()
