"""Drive a headless Chromium over the DevTools protocol (for the report tests and the screenshot).

Chromium is started with ``--remote-debugging-port=0``; the port it picked is read from the
``DevToolsActivePort`` file in its throw-away profile, and the page is driven over a websocket
with tornado's client (tornado comes with dask.distributed, so no extra dependency). What a page
load records: console messages (``Runtime.consoleAPICalled``), uncaught exceptions
(``Runtime.exceptionThrown``) and browser log entries (``Log.entryAdded``: failed image or CSS
loads, blocked requests), so an error is caught whether a script or the browser raised it.

Run as a script to take a full-page screenshot::

    python tests/browser.py OUT/report/index.html docs/report-screenshot.png [--height 2510] [--palette]
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The browser executable: ``$FLUXFLOW_CHROMIUM`` if set, else the first one on PATH."""
    env = os.environ.get("FLUXFLOW_CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    """What happened while a page loaded, and what a script evaluated in it returned."""

    url: str
    console: list[dict] = field(default_factory=list)  # {'level', 'text', 'source'}
    value: Any = None  # result of the `evaluate` expression (JSON value)

    @property
    def errors(self) -> list[dict]:
        return [m for m in self.console if m["level"] in ("error", "assert")]


class Browser:
    """One headless Chromium process; ``with Browser() as b: b.load(path, evaluate=js)``."""

    def __init__(self, executable: str | None = None, *, width: int = 1280, height: int = 900,
                 timeout: float = 30.0) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("no chromium executable found (set FLUXFLOW_CHROMIUM)")
        self.width, self.height, self.timeout = width, height, timeout
        self._profile = tempfile.mkdtemp(prefix="fluxflow-chromium-")
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"]
        self._log = open(os.path.join(self._profile, "chromium.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.port = self._wait_for_port()

    # -- process ---------------------------------------------------------------------------
    def _wait_for_port(self) -> int:
        marker = Path(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self._tail()}")
            if marker.exists():
                lines = marker.read_text().split()
                if lines and lines[0].isdigit():
                    return int(lines[0])
            time.sleep(0.05)
        self.close()
        raise TimeoutError(f"chromium did not open its DevTools port: {self._tail()}")

    def _tail(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as fh:
            return fh.read()[-2000:].decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: chromium and its helpers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- pages -----------------------------------------------------------------------------
    def _page_ws(self) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=self.timeout) as fh:
            return json.load(fh)["webSocketDebuggerUrl"]

    def load(self, path: str | os.PathLike, *, evaluate: str | None = None,
             screenshot: str | os.PathLike | None = None, clip_height: int | None = None,
             settle: float = 0.3) -> PageLoad:
        """Open `path` (a local file) in a new tab, wait for the load event, then evaluate the JS
        expression `evaluate` (its JSON value goes to ``PageLoad.value``) and optionally save a
        PNG screenshot of the whole page (or of its first `clip_height` CSS pixels)."""
        url = Path(path).resolve().as_uri()
        return asyncio.run(self._load(url, evaluate, screenshot, clip_height, settle))

    async def _load(self, url: str, evaluate: str | None, screenshot, clip_height: int | None,
                    settle: float) -> PageLoad:
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(self._page_ws(), max_message_size=256 * 2**20)
        page = PageLoad(url=url)
        session = _Session(ws, page, self.timeout)
        try:
            for method in ("Runtime.enable", "Log.enable", "Page.enable"):
                await session.call(method)
            await session.call("Emulation.setDeviceMetricsOverride", width=self.width,
                               height=self.height, deviceScaleFactor=1, mobile=False)
            session.events.clear()
            nav = await session.call("Page.navigate", url=url)
            if nav.get("errorText"):
                raise RuntimeError(f"navigation to {url} failed: {nav['errorText']}")
            await session.wait_event("Page.loadEventFired")
            await session.wait_loaded(url)
            await asyncio.sleep(settle)  # late console messages (decode errors arrive after load)
            await session.drain()
            if evaluate is not None:
                res = await session.call("Runtime.evaluate", expression=evaluate,
                                         returnByValue=True, awaitPromise=True)
                if "exceptionDetails" in res:
                    raise RuntimeError(f"evaluate failed: {res['exceptionDetails']}")
                page.value = res["result"].get("value")
            if screenshot is not None:
                metrics = await session.call("Page.getLayoutMetrics")
                size = metrics.get("cssContentSize") or metrics["contentSize"]
                height = int(size["height"]) + 1
                if clip_height:
                    height = min(height, clip_height)
                await session.call("Emulation.setDeviceMetricsOverride", width=self.width,
                                   height=height, deviceScaleFactor=1, mobile=False)
                shot = await session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                          clip={"x": 0, "y": 0, "width": self.width, "height": height,
                                                "scale": 1})
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            await session.drain()
        finally:
            ws.close()
        return page


class _Session:
    """Request/response matching and event collection on one page websocket."""

    def __init__(self, ws, page: PageLoad, timeout: float) -> None:
        self.ws, self.page, self.timeout = ws, page, timeout
        self._next = 0
        self.events: list[str] = []

    async def call(self, method: str, **params) -> dict:
        self._next += 1
        mid = self._next
        await self.ws.write_message(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = await self._read()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def wait_event(self, name: str) -> None:
        while name not in self.events:
            await self._read()

    async def wait_loaded(self, url: str) -> None:
        """Poll until the document at `url` has finished loading (a stale about:blank load event
        cannot end the wait)."""
        deadline = time.monotonic() + self.timeout
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        while time.monotonic() < deadline:
            res = await self.call("Runtime.evaluate", expression=check, returnByValue=True)
            if res.get("result", {}).get("value") is True:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{url} did not finish loading")

    async def drain(self) -> None:
        """Read whatever events are already queued."""
        while True:
            try:
                await asyncio.wait_for(self._read(), 0.05)
            except asyncio.TimeoutError:
                return

    async def _read(self) -> dict:
        raw = await asyncio.wait_for(self.ws.read_message(), self.timeout)
        if raw is None:
            raise RuntimeError("DevTools connection closed")
        msg = json.loads(raw)
        method = msg.get("method")
        if method:
            self.events.append(method)
            self._record(method, msg.get("params", {}))
        return msg

    def _record(self, method: str, p: dict) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.page.console.append({"level": p.get("type", "log"), "text": text, "source": "console"})
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            self.page.console.append({"level": "error", "text": text, "source": "exception"})
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            self.page.console.append({"level": e.get("level", "info"),
                                      "text": f"{e.get('text', '')} {e.get('url', '')}".strip(),
                                      "source": e.get("source", "log")})


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="full-page screenshot of a local HTML file")
    ap.add_argument("page")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=None, help="only the first HEIGHT pixels of the page")
    ap.add_argument("--palette", action="store_true", help="256-colour PNG (about a third of the size)")
    a = ap.parse_args(argv)
    with Browser(width=a.width) as b:
        load = b.load(a.page, screenshot=a.png, clip_height=a.height)
    if a.palette:
        from PIL import Image  # Pillow comes with matplotlib

        with Image.open(a.png) as im:
            pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pal.save(a.png, optimize=True)
    for m in load.console:
        print(f"{m['level']}: {m['text']}")
    print(f"wrote {a.png}")
    return 1 if load.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
