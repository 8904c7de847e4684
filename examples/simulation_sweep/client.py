"""A client for ``simserver.py``: one REQ socket, JSON requests carrying the server's token."""

from __future__ import annotations

from typing import Any

import zmq


class SimClient:
    def __init__(self, host: str, port: int, token: str, *, timeout: float = 30.0) -> None:
        self.token = token
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.REQ)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))  # never hang on a dead server
        self._socket.connect(f"tcp://{host}:{port}")

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self._socket.send_json({"token": self.token, "cmd": cmd, **fields})
        reply: dict[str, Any] = self._socket.recv_json()  # type: ignore[assignment]
        if not reply.get("ok"):
            raise RuntimeError(f"simulation server refused {cmd!r}: {reply.get('error')}")
        return reply

    def simulate(self, params: dict[str, Any]) -> dict[str, float]:
        result: dict[str, float] = self.request("simulate", params=params)["result"]
        return result

    def close(self) -> None:
        self._socket.close()
        self._context.term()

    def __enter__(self) -> SimClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
