"""A store behind a misbehaving gateway: an HTTP proxy in front of moto's server that passes everything through as it
is, except the requests it is told to slow down (a body sent a byte every half second: no idle or per-request timeout
ends the read; an upload's empty answer is given a body to trickle), to fail (HTTP 500, as S3 answers an internal
error), or to answer with a 500 after the store did them (a JSON API's call, by its X-Amz-Target: the service failed
after writing, or the answer was lost)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

Rule = Callable[[str, str], bool]  # (method, path with query) -> whether the rule applies
S3_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an '
            b'internal error. Please try again.</Message></Error>')
JSON_ERROR = b'{"__type":"InternalFailure","message":"Internal service failure."}'


class Proxy:
    def __init__(self, upstream: str, *, trickle: Rule = lambda m, p: False, fail: Rule = lambda m, p: False,
                 answer_lost: Callable[[str], bool] = lambda target: False):
        up = urlsplit(upstream)
        self.failed = 0
        self.calls: dict[str, int] = {}  # JSON API calls passed on, by X-Amz-Target

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _error(self, kind: str, body: bytes):
                """A 500 with `body`, as the service answers an internal error."""
                self.send_response(500)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _pass(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if fail(self.command, self.path):
                    outer.failed += 1
                    self._error("application/xml", S3_ERROR)
                    return
                c = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                c.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                r = c.getresponse()
                data = r.read()
                if not data and self.command == "PUT" and trickle(self.command, self.path):
                    data = b'<?xml version="1.0" encoding="UTF-8"?>\n<PutObjectResult/>'  # an answer to trickle
                target = self.headers.get("X-Amz-Target")
                if target:
                    outer.calls[target] = outer.calls.get(target, 0) + 1
                if target and answer_lost(target):
                    self._error("application/x-amz-json-1.1", JSON_ERROR)
                    return
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", r.getheader("Content-Length") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                try:
                    if not (trickle(self.command, self.path) and r.status < 300):
                        self.wfile.write(data)
                        return
                    for i in range(len(data)):
                        if outer.closed.is_set():  # a reader the code under test left: cut, so it ends (a pyarrow
                            # read left trickling held one of pyarrow's I/O threads, and a later test waited on it)
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass  # the reader went away

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _pass

        outer = self
        self.closed = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()
