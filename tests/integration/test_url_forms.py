"""Every component on a `unix://` socket and on TLS (`rediss://`): web app (its queue
and rate limiter included), bridge and producer, end to end."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from streambridge.embedded_redis import RedisServer, free_port
from tests.support import Bridge, Client, Web, clean_env, cli, start_together

pytestmark = pytest.mark.integration


def tls_files(directory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture(params=["unix", "tls"])
def url_form(request, tmp_path):
    if request.param == "unix":
        # Short: Redis reports a socket's path cut to 78 bytes, and the kernel's limit is 107.
        short = Path(tempfile.mkdtemp(prefix="sb-"))
        request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
        socket_path = short / "redis.sock"
        server = RedisServer(
            tmp_path / "redis", extra_args=["--unixsocket", str(socket_path)]
        ).start()
        url = f"unix://{socket_path}?db=0"
        local = str(socket_path)
    else:
        cert, key = tls_files(tmp_path)
        tls_port = free_port()
        server = RedisServer(
            tmp_path / "redis",
            extra_args=[
                "--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
                "--tls-ca-cert-file", cert, "--tls-auth-clients", "no",
            ],
        ).start()  # fmt: skip
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
        local = f"127.0.0.1:{tls_port}"
    yield request.param, url, server, local
    server.stop()


def test_every_component_on_this_url(url_form, users_file, tmp_path, processes, clients):
    form, url, server, local = url_form
    env = clean_env(
        REDIS_URL=url,
        STREAMBRIDGE_USERS_FILE=str(users_file),
        STREAMBRIDGE_SECRET_KEY="x" * 40,
        STREAMBRIDGE_LOGIN_RATE_LIMIT="100 per minute",  # kept in Redis, over this URL
    )
    web, bridge = Web(env, tmp_path), Bridge(env, tmp_path)
    processes.extend([web, bridge])
    start_together(web, bridge)
    alice = Client().connect(web, web.login("alice"))
    clients.append(alice)
    out = cli(env, "publish", "message", f'"over {form}"')
    assert out.returncode == 0, out.stderr
    [(_, body, meta)] = alice.wait_for(1, "message")
    assert body == f"over {form}" and meta["entry"] == out.stdout.strip()
    # Web (pool, queue subscription), bridge: all connected over the URL's transport;
    # the only plain-TCP client is this test's own, asking.
    connected = [c for c in server.client().client_list() if c["cmd"] != "client|list"]
    assert any("P" in c["flags"] for c in connected)  # the queue subscription
    assert connected and all(c["laddr"].startswith(local) for c in connected), connected
    limits = [k for k in server.client().scan_iter("*streambridge:limits*")]
    assert limits, "the login rate limit is counted in this Redis"
