"""A bare WSGI app for the worker's own tests: answers the service never
gives (interim 103 answers, a streamed body that fails half-way, which thread
answered), run under the real worker class and gunicorn config."""

import threading
import time

BIG = 32_000_000


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/early-hints":
        environ["wsgi.early_hints"]([("Link", "</style.css>; rel=preload")])
        time.sleep(1.0)
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]
    if path == "/fails-mid-stream":
        start_response("200 OK", [])

        def chunks():
            yield b"B" * BIG  # more than the socket takes at once: the rest waits for the event loop
            raise RuntimeError("failed half-way through the answer")

        return chunks()
    if path == "/thread":  # which thread answers, and the query string, to tell pipelined answers apart
        environ["wsgi.input"].read()
        where = "loop" if threading.current_thread() is threading.main_thread() else "request thread"
        body = f"{where} {environ.get('QUERY_STRING', '')}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
