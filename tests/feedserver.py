"""A real HTTP server on 127.0.0.1 for feed tests: one thread, a script of replies per path,
and a record of every request it received (path and headers).

    server = FeedServer()
    server.route("/feed.xml", Reply(body=rss_bytes, headers={"ETag": '"v1"'}))
    server.route("/cond.xml", lambda request: Reply(304) if request.headers.get(
        "if-none-match") == '"v1"' else Reply(body=rss_bytes, headers={"ETag": '"v1"'}))
    url = server.url("/feed.xml")
    server.received("/feed.xml")  # [Request(path, headers), ...]

Replies can be slow (`delay` before the status line), dribbled (`dribble` seconds between
small chunks of the body, for at most `dribble_for` seconds), sent without Content-Length (the
body then ends when the connection closes: HTTP/1.0), or any status and headers.
"""

import http.server
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before anything is sent
    dribble: float | None = None  # seconds between chunks of the body
    dribble_for: float = 10.0  # a dribbling reply gives up after this long (a bound for tests)
    chunk: int = 16
    content_length: bool = True
    head_dribble: float | None = None  # seconds between bytes of the status line and headers


@dataclass
class Request:
    path: str
    headers: dict  # lower-case names


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers each request from its FeedServer's script (set as `feeds` on a subclass)."""

    protocol_version = "HTTP/1.0"  # one request per connection; a body may end at close
    feeds = None

    def do_GET(self):
        request = Request(self.path, {k.lower(): v for k, v in self.headers.items()})
        with self.feeds._lock:
            self.feeds.requests.append(request)
            script = self.feeds.routes.get(self.path.split("?", 1)[0])
        reply = script(request) if callable(script) else script
        if reply is None:
            reply = Reply(404, b"not found")
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout, a size cap): what the test wanted

    def _send(self, reply):
        if reply.delay:
            time.sleep(reply.delay)
        headers = dict(reply.headers)
        if reply.content_length and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(reply.body))
        if reply.head_dribble is None:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
        else:  # a slow loris: every read gets a byte
            head = f"HTTP/1.0 {reply.status} {self.responses[reply.status][0]}\r\n" + \
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            if not self._dribble(reply, head.encode("latin-1"), size=1,
                                 pause=reply.head_dribble):
                return
        if reply.dribble is None:
            self.wfile.write(reply.body)
        else:
            self._dribble(reply, reply.body, size=reply.chunk, pause=reply.dribble)

    def _dribble(self, reply, data, *, size, pause):
        """Write data in chunks of size, pausing between them; False if it gave up (after
        reply.dribble_for seconds)."""
        stop = time.monotonic() + reply.dribble_for
        for start in range(0, len(data), size):
            self.wfile.write(data[start:start + size])
            self.wfile.flush()
            if time.monotonic() > stop:
                return False
            time.sleep(pause)
        return True

    def log_message(self, *args):
        pass


class FeedServer:
    def __init__(self):
        self.routes, self.requests = {}, []
        self._lock = threading.Lock()
        handler = type("BoundHandler", (Handler,), {"feeds": self})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path, reply):
        """Serve path with a Reply, or with reply(request) -> Reply for each request."""
        with self._lock:
            self.routes[path] = reply

    def received(self, path):
        """The requests received for path (query strings ignored), in order."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
