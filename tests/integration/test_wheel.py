"""The built wheel, installed into a fresh virtualenv outside this checkout, as a user
installs it: only ``streambridge`` lands in site-packages, a producer needs no web
extras, and the host example app serves the real browser client and delivers."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, Bridge, Client, HostApp

pytestmark = pytest.mark.integration

VENDORED = ROOT / "webapp/ext/static/vendor/socket.io.min.js"
PIP = ("-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet")


def _run(*args: str | Path, cwd: Path) -> str:
    out = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"{args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built with this venv's setuptools (no build isolation: no registry needed).
    _run(sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", out, ROOT,
         cwd=out)  # fmt: skip
    [built] = out.glob("streambridge-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel) -> Path:
    """A virtualenv outside the checkout with the wheel and only its base dependencies."""
    home = tmp_path_factory.mktemp("fresh")
    venv.create(home / "venv", with_pip=True)
    python = home / "venv/bin/python"
    _run(python, *PIP, "install", wheel, cwd=home)
    return python


def _python(python: Path, code: str, cwd: Path) -> dict:
    return json.loads(_run(python, "-c", code, cwd=cwd))


def test_the_wheel_holds_one_package_and_the_browser_client(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "streambridge",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    client = zipfile.ZipFile(wheel).read("streambridge/webapp/ext/static/vendor/socket.io.min.js")
    assert client == VENDORED.read_bytes()
    assert "streambridge/webapp/ext/static/vendor/socket.io.LICENSE" in names
    assert "streambridge/templates/index.html" in names


def test_only_streambridge_is_installed_and_publishing_needs_no_web_extras(
    fresh, tmp_path, redis_server, redis_client
):
    code = f"""
import importlib.metadata, importlib.util, json
import streambridge
from streambridge import Event, publish, publish_many
dist = importlib.metadata.distribution("streambridge")
tops = sorted({{str(f).split("/")[0] for f in dist.files if not str(f).startswith("..")}})
streambridge.configure({redis_server.url!r})
first = publish("message", {{"n": 1}}, room="user:alice")
more = publish_many([{{"channel": "message", "body": {{"n": 2}}}}])
assert Event.__module__ == "streambridge.contract"
missing = [m for m in ("flask", "flask_socketio", "eventlet", "prometheus_client", "tqdm")
           if importlib.util.find_spec(m) is None]
print(json.dumps({{"tops": tops, "ids": [first, *more], "missing": missing,
                  "file": streambridge.__file__}}))
"""
    seen = _python(fresh, code, cwd=tmp_path)
    assert seen["tops"] == ["streambridge", "streambridge-0.1.0.dist-info"]
    assert seen["missing"] == ["flask", "flask_socketio", "eventlet", "prometheus_client", "tqdm"]
    assert not seen["file"].startswith(str(ROOT))
    entries = redis_client.xrange("events")
    assert [stream_id for stream_id, _ in entries] == seen["ids"]


class FreshHostApp(HostApp):
    command = (str(ROOT / "examples/host_app/app.py"),)


def test_the_host_example_serves_the_client_and_delivers(
    fresh, wheel, tmp_path, env, processes, clients, redis_client
):
    _run(fresh, *PIP, "install", f"{wheel}[examples]", cwd=tmp_path)
    # A host app's own packages with common names, in the folder the processes start
    # from (on sys.path for `python -m`): ours must never import them.
    for name in ("webapp", "bridge", "producers", "templates"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the app's {name}')")
    bridge = Bridge(env, tmp_path)
    host = FreshHostApp(env, tmp_path)
    for proc in (bridge, host):  # the fresh virtualenv's Python, outside the checkout
        proc.python, proc.cwd = str(fresh), tmp_path
        processes.append(proc)
    bridge.start()
    host.start()

    script = requests.get(host.url + "/streambridge.js", timeout=5)
    assert script.status_code == 200
    assert script.content.startswith(VENDORED.read_bytes())
    assert b"StreamBridge" in script.content

    alice = Client().connect(host, host.login("alice"))
    clients.append(alice)
    redis_client.xadd("events", {"channel": "message", "body": '"hi"', "room": "user:alice"})
    [(_, body, _)] = alice.wait_for(1, "message")
    assert body == "hi"
    # Both processes ran the installed copy, not this checkout's.
    assert str(ROOT / "webapp") not in host.output() + bridge.output()
