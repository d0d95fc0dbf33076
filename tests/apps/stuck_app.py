"""A Flask app that embeds streambridge and has a route that never answers: the web
server's request deadline must free its connection anyway."""

from streambridge.async_mode import prepare

prepare()  # eventlet monkey-patches before anything else imports sockets

import argparse  # noqa: E402
import threading  # noqa: E402

from flask import Flask  # noqa: E402
from streambridge.webapp.ext.extension import StreamBridge  # noqa: E402
from streambridge.webapp.ext.server import run_app  # noqa: E402

from streambridge.logging_setup import configure  # noqa: E402

app = Flask(__name__)
app.config["SECRET_KEY"] = "stuck-app-" * 4
StreamBridge(app, user_loader=lambda: None)
never = threading.Event()


@app.get("/stuck")
def stuck():
    never.wait()  # a handler that waits for something that never happens
    return "unreachable"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure()
    run_app(app, args.host, args.port)
