"""Pages and what they load: the root page, the demo page, `tributary.js` and its vendored
socket.io client (the pinned npm package's file, with its license), the readable refusal of a
foreign origin, and the user's own aggregates the demo shows."""

from __future__ import annotations

import hashlib
import json
import re

import requests

from tests.conftest import ROOT, unavailable

VENDOR = ROOT / "webapp" / "static" / "vendor" / "socket.io-client"
PINNED = json.loads((ROOT / "tests" / "js" / "package.json").read_text())["dependencies"][
    "socket.io-client"]


def test_the_root_page_says_what_tributary_is_and_links_to_its_pages(mysql_backend, start_web):
    web = start_web(mysql_backend)
    page = requests.get(f"{web.url}/", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "exactly once" in page.text
    links = set(re.findall(r'href="(/[^"]*)"', page.text))
    assert {"/demo", "/admin", "/api/docs", "/healthz"} <= links
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_demo_page_and_its_modules_are_served_from_the_app(mysql_backend, start_web):
    web = start_web(mysql_backend)
    demo = requests.get(f"{web.url}/demo", timeout=5)
    assert demo.status_code == 200
    assert '<script type="module" src="/static/demo.js">' in demo.text
    for path in ("/static/demo.js", "/static/tributary.js",
                 "/static/vendor/socket.io-client/socket.io.esm.min.js"):
        served = requests.get(f"{web.url}{path}", timeout=5)
        assert served.status_code == 200, path
        assert served.headers["Content-Type"].split(";")[0] in (
            "text/javascript", "application/javascript"), path
    library = requests.get(f"{web.url}/static/tributary.js", timeout=5).text
    assert "export function connect(url, options = {})" in library
    assert "https://" not in re.sub(r"//.*", "", library)  # nothing from elsewhere
    # An unknown path is still a JSON 404.
    missing = requests.get(f"{web.url}/nothing-here", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]


def test_the_vendored_socket_io_client_is_the_pinned_package_file_with_its_license():
    bundle = (VENDOR / "socket.io.esm.min.js").read_bytes()
    assert bundle.startswith(f"/*!\n * Socket.IO v{PINNED}\n".encode())
    manifest = (VENDOR / "README.md").read_text()
    assert f"| version | {PINNED}," in manifest
    assert hashlib.sha256(bundle).hexdigest() in manifest
    assert "MIT License" in (VENDOR / "LICENSE").read_text()
    package = ROOT / "tests" / "js" / "node_modules" / "socket.io-client"
    if not package.is_dir():
        unavailable("tests/js/node_modules is missing (make test installs it)")
    assert (package / "dist" / "socket.io.esm.min.js").read_bytes() == bundle
    assert (package / "LICENSE").read_bytes() == (VENDOR / "LICENSE").read_bytes()


def test_a_socketio_handshake_from_a_foreign_origin_is_refused_with_a_reason_it_can_read(
        mysql_backend, start_web):
    web = start_web(mysql_backend, CORS_ORIGINS="https://app.example")
    handshake = f"{web.url}/socket.io/?EIO=4&transport=polling"
    refused = requests.get(handshake, headers={"Origin": "https://elsewhere.example"},
                           timeout=5)
    assert refused.status_code == 403
    assert refused.json() == {"error": "origin not allowed"}
    assert refused.headers["Access-Control-Allow-Origin"] == "https://elsewhere.example"
    for origin in ("https://app.example", web.url, None):
        headers = {"Origin": origin} if origin else {}
        accepted = requests.get(handshake, headers=headers, timeout=5)
        assert accepted.status_code == 200, origin
        assert accepted.text.startswith("0{")  # an engine.io OPEN packet
    # Nothing else is shared with the foreign origin.
    health = requests.get(f"{web.url}/healthz", headers={"Origin": "https://elsewhere.example"},
                          timeout=5)
    assert "Access-Control-Allow-Origin" not in health.headers
