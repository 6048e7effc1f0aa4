"""Headless Chromium through chromedriver's W3C WebDriver HTTP API (urllib, no selenium).

`Browser()` starts Debian's chromedriver on a free loopback port and one Chromium session with
the flags the fleet report test needs (headless, no sandbox as root, no GPU, no QUIC, no
background networking, no component updates, no sync, a fresh user data dir, every host name
resolving to nothing so a request that tried to leave the machine would fail and be logged).
Performance logging is on: `requests()` lists every network request the page made.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
                  "--window-size=1280,2000"]


def chromium_paths() -> Optional[tuple]:
    """(chromium, chromedriver) when both are installed, else None."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, timeout: float = 60.0) -> None:
        paths = chromium_paths()
        if paths is None:
            raise RuntimeError("chromium and chromedriver are not installed")
        chrome, driver = paths
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="ktstr-chromium-")
        self.driver = subprocess.Popen([driver, f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    self.close()
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.2)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chrome,
                                   "args": CHROMIUM_FLAGS + [f"--user-data-dir={self.profile}"]},
            "goog:loggingPrefs": {"performance": "ALL"}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            payload = json.loads(resp.read() or b"{}")
        value = payload.get("value", payload)
        if isinstance(value, dict) and "sessionId" in value and "sessionId" not in payload:
            return value
        return value if path != "/session" else {**value, "sessionId": value.get("sessionId")}

    def _s(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: str) -> str:
        png = base64.b64decode(self._s("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        return path

    def requests(self) -> List[str]:
        """URLs of every network request since the last call (Chromium's performance log)."""
        entries = self._s("POST", "/se/log", {"type": "performance"})
        urls = []
        for e in entries or []:
            try:
                msg = json.loads(e["message"])["message"]
            except (KeyError, ValueError, TypeError):
                continue
            if msg.get("method") == "Network.requestWillBeSent":
                urls.append(msg["params"]["request"]["url"])
        return urls

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._s("DELETE", "")
        except OSError:
            pass
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def artefact_dir() -> str:
    """Where tests leave files for people to look at ($KTSTR_TEST_ARTEFACTS, else the cache)."""
    d = os.environ.get("KTSTR_TEST_ARTEFACTS") or os.path.expanduser(
        "~/.cache/ktstr-test-artefacts")
    os.makedirs(d, exist_ok=True)
    return d
