"""A real headless Chromium, driven by the DevTools protocol over a pipe (no websocket library).

``--remote-debugging-pipe`` makes Chromium read protocol commands from its fd 3 and write
answers and events to its fd 4, each a JSON text ended by a NUL byte: the whole client is a
pipe pair, a reader thread and a dict of pending ids. Used by tests/test_html_report.py to
open a report the way a person would and look at what the browser saw: console messages,
exceptions, network requests, the DOM, a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests._deps import require_program

TIMEOUT = 60.0


class Browser:
    def __init__(self, exe: str, profile: Path) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Out of the way of 3 and 4, so that the dup2s in the child cannot clobber each other.
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def child_fds() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            exe,
            "--headless",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen(
            args,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(high_r)
        os.close(high_w)
        self._out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self._in = os.fdopen(from_chrome_r, "rb", buffering=0)
        self._next = 0
        self._lock = threading.Lock()
        self._answers: dict[int, queue.SimpleQueue[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_added = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = self._in.read(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        answer = self._answers.get(message["id"])
                    if answer is not None:
                        answer.put(message)
                else:
                    with self._event_added:
                        self.events.append(message)
                        self._event_added.notify_all()

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            ident = self._next
            answer: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
            self._answers[ident] = answer
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        reply = answer.get(timeout=TIMEOUT)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})  # type: ignore[no-any-return]

    def wait_for(self, method: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        with self._event_added:
            found = self._event_added.wait_for(
                lambda: next((e for e in self.events if e.get("method") == method), None),
                timeout,
            )
        if not found:
            raise TimeoutError(f"Chromium sent no {method} within {timeout} s")
        return next(e for e in self.events if e.get("method") == method)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()
        self._reader.join(timeout=5)
        self._in.close()


class Page:
    """One tab: what it loaded, logged and requested."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, self.session, **params)

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def _mine(self, method: str) -> list[dict[str, Any]]:
        return [
            e["params"]
            for e in list(self.browser.events)
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def console_errors(self) -> list[str]:
        errors = [
            " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            for p in self._mine("Runtime.consoleAPICalled")
            if p["type"] in ("error", "assert", "warning")
        ]
        errors += [p["exceptionDetails"]["text"] for p in self._mine("Runtime.exceptionThrown")]
        errors += [
            p["entry"]["text"]
            for p in self._mine("Log.entryAdded")
            if p["entry"]["level"] in ("error", "warning")
        ]
        return errors

    def requested(self) -> list[str]:
        return [p["request"]["url"] for p in self._mine("Network.requestWillBeSent")]

    def screenshot(self, path: Path) -> None:
        reply = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(reply["data"]))


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    """A headless Chromium (the test fails under CI, and skips elsewhere, when missing)."""
    exe = require_program("chromium")
    browser = Browser(exe, profile)
    try:
        yield browser
    finally:
        browser.close()


def open_page(browser: Browser, url: str, width: int = 1280, height: int = 900) -> Page:
    """Open ``url`` in a new tab, with console, log and network watched from the start,
    and wait until it has loaded."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    page = Page(browser, session)
    for domain in ("Runtime", "Log", "Network", "Page"):
        page.send(f"{domain}.enable")
    page.send(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    page.send("Page.navigate", url=url)
    with browser._event_added:
        loaded = browser._event_added.wait_for(
            lambda: any(
                e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session
                for e in browser.events
            ),
            TIMEOUT,
        )
    if not loaded:
        raise TimeoutError(f"{url} did not load within {TIMEOUT} s")
    return page
