"""Real-browser tests: Debian's Chromium driven by Playwright's Python package.

Nothing here downloads a browser: Playwright launches `/usr/bin/chromium` (installed by
tests/ensure-services.sh when missing), headless, with a fresh profile per test, and with the
background services that would otherwise hang on this machine's closed network switched off.
Each test leaves a screenshot of its page in tests/artifacts/ (ignored by git).

Pages that are not Tributary's own (a plain socket.io page, a page from a foreign origin) are
served by `StaticSite`, a small HTTP server on another port, hence another origin.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.schema import messages
from tests.conftest import ROOT, unavailable, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
STATIC = ROOT / "webapp" / "static"
#: The socket.io client's UMD bundle from the pinned npm package, for pages that load it the
#: way a plain page does (a <script> tag).
SOCKET_IO_UMD = ROOT / "tests" / "js" / "node_modules" / "socket.io-client" / "dist" / \
    "socket.io.min.js"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (make test installs requirements-dev.txt)")
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is missing (make test installs Debian's chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def page(playwright: Any, processes: Any, tmp_path: Path,
         request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page in a fresh Chromium profile; its console errors and uncaught exceptions are in
    `page.problems`. A screenshot goes to tests/artifacts/<test>.png at the end, taken before
    the test's processes are stopped."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
        args=CHROMIUM_ARGS)
    page = context.pages[0] if context.pages else context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    # Resources that fail to load are expected while a test has the server down; a script
    # that fails shows as an uncaught error.
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None)
    page.problems = problems
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        finally:
            context.close()


class StaticSite:
    """Files served over HTTP from a directory of the test's own, on a port (an origin) of
    their own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, name: str, text: str) -> None:
        (self.directory / name).write_text(text)

    def copy(self, source: Path, name: str) -> None:
        target = self.directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[StaticSite]:
    directory = tmp_path / "site"
    directory.mkdir()
    site = StaticSite(directory)
    site.thread.start()
    yield site
    site.close()


# --- the demo page -------------------------------------------------------------------------------

def sign_in(page: Any, url: str, username: str, *, register: bool = True,
            persist: bool = True) -> None:
    """Open the demo page at `url`, register (or log in), and wait until it is connected."""
    page.goto(f"{url}/demo")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "password-for-tests")
    if page.is_checked("input[name=persist]") != persist:
        page.click("input[name=persist]")
    page.click(f"button[value={'register' if register else 'login'}]")
    wait_for_connection(page)


def wait_for_connection(page: Any, timeout: float = 20) -> None:
    page.wait_for_selector("#connection[data-status=connected]", timeout=timeout * 1000)


def count(page: Any, name: str) -> int:
    return int(page.text_content(f"#count-{name}") or 0)


def record_msg_ids(page: Any, into: set[str]) -> None:
    """Add to `into` every msg_id the page's client reports a state for (its own messages
    only), from now on, across reloads of the page."""
    if not getattr(page, "_recording", False):
        page.expose_function("recordMsgId", lambda msg_id: into.add(msg_id))
        page._recording = True
    page.wait_for_function("window.demo && window.demo.client")
    page.evaluate("demo.client.on('state', (msgId) => window.recordMsgId(msgId))")


def all_settled(page: Any) -> bool:
    """The page shows nothing queued, sent or accepted, and an empty outbox."""
    return all(count(page, name) == 0 for name in ("queued", "sent", "accepted", "outbox"))


def wait_for_generated(page: Any, at_least: int, timeout: float = 20) -> None:
    wait_until(lambda: count(page, "generated") >= at_least, timeout,
               what=f"the page to generate {at_least} messages")


def open_demo_with_tokens(page: Any, web: Any, access_token: str, refresh_token: str) -> None:
    """Open the demo page already signed in with these tokens (as after a login)."""
    page.goto(f"{web.url}/")
    session = {"username": "alice", "access_token": access_token,
               "refresh_token": refresh_token, "persist": False}
    page.evaluate("session => sessionStorage.setItem('tributary-demo-session', "
                  "JSON.stringify(session))", session)
    page.goto(f"{web.url}/demo")


def stored_msg_ids(db: Any, user: str) -> list[str]:
    """The msg_ids of the user's rows in `messages`."""
    with db.connect() as conn:
        return list(conn.execute(sa.select(messages.c.msg_id)
                                 .where(messages.c.user_id == user)).scalars())
