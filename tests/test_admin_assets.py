"""Every asset of the operator dashboard comes from the web process itself: each script and
stylesheet its pages name is a path on this server that answers 200, the pages forbid scripts
from elsewhere, and the vendored chart library is the one its README names."""

from __future__ import annotations

import hashlib
import re

from tests.admin_support import ensure_account, signed_in
from tests.conftest import ROOT

VENDORED = {
    "webapp/static/vendor/uplot/uPlot.iife.min.js":
        "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "webapp/static/vendor/uplot/uPlot.min.css":
        "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "webapp/static/vendor/socket.io-client/socket.io.esm.min.js":
        "771c3872e7d9bf81020615fda67ef0fd2aa61fcaf1990100714a46fa2c39f8a1",
}


def test_the_vendored_files_are_the_published_ones_with_their_licenses():
    for path, digest in VENDORED.items():
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == digest, path
        assert (ROOT / path).parent.joinpath("LICENSE").is_file()
        assert digest in (ROOT / path).parent.joinpath("README.md").read_text(), path


def test_every_asset_of_every_page_is_served_here(mysql_backend, start_web):
    ensure_account(mysql_backend, "watcher", "viewer")
    web = start_web(mysql_backend)
    viewer = signed_in(web.url, "watcher")
    pages = ["/admin/", "/admin/queues/", "/admin/processes/", "/admin/messages/",
             "/admin/users/", "/admin/dead-letters/", "/admin/audit/"]
    assets: set[str] = set()
    for path in pages:
        page = viewer.get(path)
        assert page.status_code == 200
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assets |= set(re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page.text))
        assets |= set(re.findall(r'from "(/static/[^"]+)"',
                                 viewer.get("/static/admin/overview.js").text))
    assets.discard("data:,")
    assert assets and all(url.startswith("/") and not url.startswith("//") for url in assets)
    for url in sorted(assets):
        assert viewer.get(url).status_code == 200, url
    assert {url.split("?")[0] for url in assets} >= {
        "/static/vendor/uplot/uPlot.iife.min.js", "/static/admin/overview.js",
        "/admin/static/bootstrap/bootstrap4/css/bootstrap.min.css"}
