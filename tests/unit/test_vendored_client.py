"""The browser client ships in the package; it is the version package.json pins."""

from __future__ import annotations

import json

from tests.support import ROOT

VENDOR = ROOT / "webapp/ext/static/vendor"


def test_vendored_client_is_the_pinned_release():
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["socket.io-client"]
    header = (VENDOR / "socket.io.min.js").read_text()[:200]
    assert f"Socket.IO v{pinned}\n" in header
    assert "MIT" in (VENDOR / "socket.io.LICENSE").read_text()
    npm_copy = ROOT / "node_modules/socket.io-client/dist/socket.io.min.js"
    if npm_copy.exists():  # after scripts/setup.sh: the same bytes as the npm package
        assert npm_copy.read_bytes() == (VENDOR / "socket.io.min.js").read_bytes()


def test_vendored_chart_library_is_the_pinned_release():
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["uplot"]
    assert (VENDOR / "uPlot.iife.min.js").read_text()[:120].find(f"(v{pinned})") > 0
    assert "MIT" in (VENDOR / "uPlot.LICENSE").read_text()
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        npm_copy = ROOT / "node_modules/uplot/dist" / name
        if npm_copy.exists():
            assert npm_copy.read_bytes() == (VENDOR / name).read_bytes()
