"""A tiny driver for headless Chromium over the DevTools protocol, on a pipe (stdlib only).

Chromium started with ``--remote-debugging-pipe`` reads protocol commands from its file
descriptor 3 and writes replies and events to its descriptor 4, one JSON message each,
terminated by a NUL byte. No port, no websocket, no extra package: ``Chromium`` opens two pipes,
starts the browser with them as fds 3 and 4, attaches to one page and collects every event.

    with Chromium(find_chromium()) as browser:
        browser.open(path.as_uri())
        browser.evaluate("document.title")
        browser.click("#units th button")
        browser.wait_for("document.querySelector('#units th').ariaSort !== 'none'")
        assert not browser.console_errors()
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

__all__ = ["BROWSER_FLAGS", "Chromium", "ChromiumError", "find_chromium"]

BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
)
"""Offline, root-friendly flags: nothing tries to reach the network in the background."""


class ChromiumError(RuntimeError):
    """The browser failed, answered with an error, or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or more (so moving it to 3 or 4 clobbers nothing)."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return copy


class Chromium:
    """One headless Chromium with one page, driven over ``--remote-debugging-pipe``.

    Args:
        binary: the Chromium executable.
        width, height: the page's viewport.
        timeout: seconds to wait for any one answer.
    """

    def __init__(
        self, binary: str, *, width: int = 1280, height: int = 900, timeout: float = 60
    ) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="ne-chromium-")
        self._log_path = Path(self._profile.name) / "chromium.log"
        self._log = self._log_path.open("wb")
        commands_read, commands_write = map(_high_fd, os.pipe())
        replies_read, replies_write = map(_high_fd, os.pipe())
        # exec through bash (dash refuses fds above 9) to put the pipe ends on fds 3 (commands)
        # and 4 (replies).
        script = f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write}'
        self._process = subprocess.Popen(
            [
                shutil.which("bash") or "/bin/bash",
                "-c",
                script,
                binary,
                *BROWSER_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}/profile",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(commands_read, replies_write),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._commands = os.fdopen(commands_write, "wb", buffering=0)
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(replies_read,), daemon=True)
        self._reader.start()
        self._next_id = 0
        self._session: str | None = None
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
            attached = self.send(
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
                browser=True,
            )
            self._session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self, fd: int) -> None:
        buffer = b""
        with os.fdopen(fd, "rb", buffering=0) as replies:
            while chunk := replies.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._replies.put(json.loads(message))
        self._replies.put(None)  # the browser closed its end

    def log(self) -> str:
        """What the browser printed (for failure messages)."""
        self._log.flush()
        return self._log_path.read_text(errors="replace")[-4000:]

    def _receive(self, deadline: float) -> dict[str, Any]:
        try:
            message = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise ChromiumError(f"no answer in {self.timeout} s\n{self.log()}") from None
        if message is None:
            raise ChromiumError(f"the browser closed the pipe\n{self.log()}")
        return message

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        browser: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one command (to the page, or to the browser) and return its result.

        Raises:
            ChromiumError: the command failed, or no answer came in ``timeout`` seconds (the
                browser's own timeout when ``None``).
        """
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser:
            command["sessionId"] = self._session
        self._commands.write(json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._receive(deadline)
            if message.get("id") != self._next_id:
                if "method" in message:
                    self.events.append(message)
                continue
            if "error" in message:
                raise ChromiumError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def wait_for_event(self, method: str) -> dict[str, Any]:
        """Wait for the next event ``method`` not seen yet, and return it.

        Raises:
            ChromiumError: no such event came in the browser's timeout.
        """
        seen = len(self.events)
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)

    # -- the page ---------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` afresh and wait for its load event (events so far are dropped, so
        `console_errors` tells about this page only). A URL that differs from the open page's
        only in its fragment (``#...``) is loaded too, not just scrolled to, so the page sees
        it as it would when opened from a link."""
        self.events.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise ChromiumError(f"cannot open {url}: {result['errorText']}")
        if "loaderId" not in result:  # a same-document (fragment) navigation: load it afresh
            self.events.clear()
            self.send("Page.reload", {"ignoreCache": True})
        if not any(e["method"] == "Page.loadEventFired" for e in self.events):
            self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 10) -> None:
        """Wait until the JavaScript expression ``condition`` is truthy in the page.

        The page polls it (every 10 ms, on its own event loop, so the events and timers that
        make it true run between two checks); an exception in ``condition`` counts as false.
        Use it after an action whose effect comes from an event that fires later (a
        ``hashchange``, a ``toggle``), instead of reading the page right away.

        Raises:
            ChromiumError: ``condition`` was still false after ``timeout`` seconds (the message
                names it, and the last exception it threw, if any).
        """
        poll = (
            "new Promise((resolve) => {"
            f" const deadline = performance.now() + {timeout * 1000:.0f}; let error = null;"
            " const check = () => {"
            f"  try {{ if ({condition}) {{ resolve(null); return; }} }}"
            "   catch (e) { error = String(e); }"
            "  if (performance.now() >= deadline) { resolve(error || 'still false'); return; }"
            "  setTimeout(check, 10);"
            " };"
            " check();"
            "})"
        )
        result = self.send(
            "Runtime.evaluate",
            {"expression": poll, "returnByValue": True, "awaitPromise": True},
            timeout=timeout + self.timeout,
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"waiting for {condition!r} threw: {result['exceptionDetails']}")
        failure = result["result"].get("value")
        if failure is not None:
            raise ChromiumError(f"{condition!r} still not true after {timeout} s ({failure})")

    def click(self, selector: str) -> None:
        """Click the middle of the first element matching ``selector`` with real mouse events."""
        point = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"
            " })()"
        )
        if point is None:
            raise ChromiumError(f"nothing matches {selector!r}")
        x, y = point
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole page by default, not just the viewport)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def screenshot_of_the_top(self) -> bytes:
        """A PNG of the viewport-sized rectangle at the top of the *document*, whatever the
        scroll position: what ``chromium --screenshot`` captures (and any tool that clips in
        page coordinates from the origin). Only the painted part of the page shows; a page
        whose window is scrolled comes out blank there."""
        size = self.evaluate("[innerWidth, innerHeight]")
        clip = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip})["data"]
        return base64.b64decode(data)

    def colours(self, png: bytes) -> int:
        """How many distinct colours the image ``png`` has (1 for a blank one), counted in a
        canvas of a blank page: this navigates away from the current page."""
        self.open("about:blank")
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        count = self.evaluate(
            "new Promise((resolve, reject) => { const image = new Image();"
            " image.onerror = () => reject(new Error('not an image'));"
            " image.onload = () => { const canvas = document.createElement('canvas');"
            "  canvas.width = image.width; canvas.height = image.height;"
            "  const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);"
            "  const pixels = new Uint32Array("
            "   context.getImageData(0, 0, image.width, image.height).data.buffer);"
            "  resolve(new Set(pixels).size); };"
            f" image.src = {json.dumps(url)}; }})"
        )
        return int(count)

    def console_errors(self) -> list[str]:
        """Every error the page reported: console errors, uncaught exceptions, and browser log
        errors (failed loads, Content-Security-Policy violations)."""
        self.evaluate("0")  # a round trip, so events sent before now have arrived
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = [a.get("value", a.get("description")) for a in params.get("args", [])]
                errors.append(f"console.{params['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                description = details.get("exception", {}).get("description")
                errors.append(f"exception: {description or details.get('text')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                errors.append(
                    f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
                )
        return errors

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the browser (politely, then by force) and remove its profile."""
        if self._process.poll() is None:
            try:
                self._commands.write(
                    json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0"
                )
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=10)
        self._commands.close()
        self._reader.join(timeout=10)
        self._log.close()
        self._profile.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
