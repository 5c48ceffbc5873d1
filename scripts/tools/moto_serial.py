"""moto's server with one request at a time: `moto_serial.py -H 127.0.0.1 -p PORT`.

DynamoDB applies each conditional write and each transaction atomically.
moto's own `moto_server` handles requests on concurrent threads without a
lock around the backend, so two conditional puts racing for one key can
both pass their condition, and a transaction's table snapshot can fail with
"dictionary changed size during iteration". Serving one request at a time
restores the atomicity the store relies on; everything else is moto's own
server (same app, same request handler).
"""

import argparse
import os
import signal
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    # Exit at once on SIGTERM: moto keeps nothing worth a clean shutdown,
    # and sys.exit() from the handler would wait for request threads.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            # The whole body is produced inside the lock.
            return [b"".join(app(environ, start_response))]

    run_simple(
        args.host,
        args.port,
        one_at_a_time,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
