"""gunicorn's threaded worker, changed so that slow clients cannot starve it.

The stock gthread worker hands a connection to a request thread as soon as
its first byte arrives; the thread then blocks reading the rest of the head
and the body. A few clients sending half a request occupy every thread and
everyone else waits. Here the worker's event loop reads each request whole
(service.http_framing says where it ends) under one deadline,
DEMAND_CLIENT_TIMEOUT, for request line, headers and body together. Only a
complete request is answered. When the deadline passes first, the
client gets a JSON 408 and the connection is closed. Idle kept-alive
connections wait in the event loop too, as in the stock worker.

A complete request of at most DEMAND_INLINE_REQUEST_BYTES (32 KiB: under a
millisecond of work, such as 1000 rows as columns) is answered on the event
loop's own thread; only larger ones go to a request thread. Handing a
request to a thread and back cost more than answering a small one: thread
switches, and the threads then contend for the GIL whenever ONNX Runtime
lets it go, so a one-row forecast cost a worker about 240 µs of CPU under
load on a request thread against about 190 µs on the loop. The price is
that a small request may wait for a larger one to finish on the loop: with
requests just under 32 KiB beside single rows, the single rows' median
latency rose by up to a millisecond while their p99 fell and the larger
requests were answered 1.3 to 2 times as often (bench/mixed.py). Nothing on
the loop waits for a client: the request is all in memory (a read past it
fails at once rather than wait), and an answer the client is not ready to
take is left to the loop, as below. The longest small request is a rare
POST /admin/reload that loads a new model: a fraction of a second. A request
the loop cannot frame itself (handed over as it is, for gunicorn to refuse)
always goes to a thread.

Also:
- gunicorn's own error pages (a bad request line, too many headers...) are
  JSON {"error": ...} like every other answer of the service;
- a response's head leaves in the same send as the start of its body, so a
  worker killed outright (SIGKILL, the OOM killer) never leaves a client or
  load balancer holding a head without its body: it gets all of a small
  answer or nothing, and nothing is safe to retry elsewhere;
- SIGTERM closes the listening sockets as soon as the event loop wakes to
  it, after taking the connections already waiting on them. The stock worker
  keeps them open until in-flight requests finish, so new connections would
  hang in the backlog and be reset at exit; closed, they are refused
  immediately and a client or load balancer retries elsewhere.
"""

import errno
import html
import json
import re
import select
import selectors
import socket
import time
from concurrent.futures import Future
from functools import partial

from gunicorn import util
from gunicorn.sock import TCPSocket
from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import Settings
from .errors import INTERNAL_ERROR
from .http_framing import CONTINUE, MORE, FramingError, RequestScanner

READ_SIZE = 256 * 1024
LINGER_SECONDS, MAX_LINGER_DRAIN = 2.0, 65536  # as gunicorn's close_graceful, without blocking the loop
EMPTY = memoryview(b"")
INTERIM = re.compile(rb"HTTP/1\.[01] 1\d\d ")  # a 1xx status line: not the response's head
REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


def json_error(status, message):
    """A whole HTTP/1.1 response that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class ClientSocket:
    """A client connection that never blocks its thread: its next reads come
    from what the event loop already received (reads past that wait at most
    until the request's deadline), and what a write cannot send at once is
    left to the event loop. The socket stays non-blocking throughout, so no
    call pays for a mode switch or a poll."""

    def __init__(self, sock, timeout):
        self.sock = sock
        sock.setblocking(False)
        self.timeout = timeout
        self.deadline = None  # of the request being read
        self.inline = False  # answered on the event loop's thread: a read past the request never waits
        self.continue_sent = False
        self.outgoing = []  # answer bytes the client was not ready for: the event loop sends them
        self._pending = EMPTY
        self._hold_next = False  # see hold_head
        self._head = None

    def take_pending(self):
        data, self._pending = bytes(self._pending), EMPTY
        return data

    def give(self, data):
        self._pending = memoryview(data)

    def recv(self, size, *flags):
        if self._pending:
            data = bytes(self._pending[:size])
            # Drop the view once used up: it keeps the whole request's buffer alive.
            self._pending = self._pending[size:] if len(self._pending) > size else EMPTY
            return data
        while True:  # past what the loop read (a head it handed over as it was): wait, up to the deadline
            try:
                return self.sock.recv(size, *flags)
            except (BlockingIOError, InterruptedError):
                pass
            remaining = 0 if self.inline else (self.deadline or time.monotonic() + self.timeout) - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                raise TimeoutError("client did not send the rest of its request in time")

    def setblocking(self, flag):
        """Ignored: the socket stays non-blocking (see the class)."""

    def gettimeout(self):
        return 0.0

    def send(self, data, *flags):
        if self.continue_sent and data == CONTINUE:
            return len(data)  # the event loop already said it, to get the body
        try:
            return self.sock.send(data, *flags)
        except (BlockingIOError, InterruptedError):
            return 0

    def hold_head(self):
        """Keep the response's head (gunicorn writes it on its own) until the
        first body bytes, and send both in one call; release_head sends a head
        that no body followed. Interim answers (103 Early Hints) go at once."""
        self._hold_next, self._head = True, None

    def release_head(self):
        head, self._hold_next, self._head = self._head, False, None
        if head is not None:
            self._send([head])

    def sendall(self, data):
        """Send what the socket takes now; the rest waits for the event loop.

        A client that stops reading its answer then holds a buffer, not a
        request thread (it has DEMAND_CLIENT_TIMEOUT to take the rest).
        """
        if self._hold_next and not INTERIM.match(data):
            self._hold_next, self._head = False, bytes(data)
        elif self._head is not None:
            head, self._head = self._head, None
            self._send([head, data])
        else:
            self._send([data])

    def _send(self, pieces):
        views = [memoryview(piece) for piece in pieces if len(piece)]
        if self.outgoing:
            self.outgoing.extend(bytes(view) for view in views)
            return
        while views:
            try:
                sent = self.sock.sendmsg(views)  # one call for all pieces
            except (BlockingIOError, InterruptedError):
                self.outgoing.extend(bytes(view) for view in views)
                return
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views:
                views[0] = views[0][sent:]

    def flush(self):
        """Send buffered answer bytes. True once all are sent."""
        while self.outgoing:
            try:
                sent = self.sock.send(self.outgoing[0])
            except (BlockingIOError, InterruptedError):
                return False
            if sent < len(self.outgoing[0]):
                self.outgoing[0] = self.outgoing[0][sent:]
                return False
            self.outgoing.pop(0)
        return True

    def __getattr__(self, name):  # fileno, shutdown, close, getsockname...
        return getattr(self.sock, name)


class Connection(TConn):
    """gunicorn's connection, closed gracefully by the event loop without blocking it."""

    def __init__(self, worker, *args):
        super().__init__(*args)
        self.worker = worker

    def close(self, graceful=False):
        if graceful:
            self.worker.linger(self)
        else:
            util.close(self.sock)


class JsonErrorSocket:
    """Receives gunicorn's HTML error page and sends the same status as JSON."""

    STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")
    MESSAGE = re.compile(r"</h1>\s*(.*?)\s*</body>", re.S)

    def __init__(self, sock):
        self.sock = sock

    def sendall(self, data):
        status = self.STATUS_LINE.match(data)
        code = int(status.group(1)) if status else 500
        found = self.MESSAGE.search(data.decode("latin-1"))
        message = found.group(1) if found and found.group(1) else REASONS.get(code, "error")
        if code >= 500 and code != 501:
            message = INTERNAL_ERROR
        from . import metrics  # not at the top: see Worker.murder_pending

        metrics.observe_refused(code)
        self.sock.sendall(json_error(code, html.unescape(message)))

    def __getattr__(self, name):
        return getattr(self.sock, name)


class Worker(ThreadWorker):
    _inline = False  # a request is being answered on the loop's thread (_handle_inline)

    def init_process(self):
        # With DEMAND_REUSE_PORT each worker also binds the address itself with
        # SO_REUSEPORT, and the kernel spreads new connections evenly over the
        # workers' sockets. On the shared socket alone, whichever worker wakes
        # first accepts a burst of connections and keeps them (keep-alive):
        # 16 connections then often all land on one of two workers, at a third
        # of the throughput (docs/benchmarks.md).
        if self.cfg.reuse_port:
            own = [
                type(s)(s.sock.getsockname()[:2], self.cfg, self.log) for s in self.sockets if isinstance(s, TCPSocket)
            ]
            self.sockets = [*self.sockets, *own]  # the shared socket still gets its share of connections
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        # The app's own settings (read once, in create_app); another WSGI app gets the defaults.
        config = getattr(self.wsgi, "config", None) or {}
        settings = config.get("SETTINGS") or Settings.from_env()
        self.client_timeout = settings.client_timeout
        self.max_body = settings.max_body_bytes
        self.inline_bytes = settings.inline_request_bytes
        self.reading = set()  # connections whose request is being read by the event loop
        self.writing = set()  # connections whose answer the event loop is still sending
        self.lingering = set()  # closed for writing, waiting for the client to close (RFC 9112 9.6)

    # -- reading requests in the event loop

    def accept(self, listener):
        try:
            client, address = listener.accept()
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self._start_serving(client, address, listener.getsockname())

    def _start_serving(self, client, address, server):
        self.nr_conns += 1
        self._start_reading(self._connection(client, address, server))

    def _connection(self, client, address, server):
        conn = Connection(self, self.cfg, client, address, server)
        conn.sock = ClientSocket(client, self.client_timeout)
        return conn

    def _start_reading(self, conn, received=b""):
        conn.buffer = bytearray(received)
        conn.client_done = False
        conn.scanner = RequestScanner(self.max_body)
        conn.sock.deadline = time.monotonic() + self.client_timeout
        conn.sock.continue_sent = False
        self.reading.add(conn)
        # A small request has usually arrived whole by now: read it at once
        # rather than after another turn of the event loop.
        if self._receive(conn) and not self._scan(conn):
            self.poller.register(conn.sock.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn, _sock):
        if self._receive(conn):
            self._scan(conn, registered=True)

    def _receive(self, conn):
        """Append what the socket has to the buffer. False when the client went away."""
        try:
            data = conn.sock.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:  # the client is done sending: what it sent may still be a whole request
            conn.client_done = True
            if not conn.buffer:
                self._drop(conn)
                return False
            return True
        conn.buffer += data
        return True

    def _scan(self, conn, registered=False):
        """Hand the request to a thread once whole. True when the loop is done with the connection."""
        try:
            state = conn.scanner.feed(conn.buffer)
        except FramingError as err:
            self._answer_and_close(conn, err.status, err.message)
            return True
        if state == MORE and conn.client_done:
            self._drop(conn)  # half a request, and no more coming
            return True
        if state == MORE:
            if conn.scanner.wants_continue(conn.buffer) and not conn.sock.continue_sent:
                conn.sock.continue_sent = True
                self._send_quietly(conn, CONTINUE)
            return False
        if registered:
            self.poller.unregister(conn.sock.sock)
        self.reading.discard(conn)
        inline = conn.scanner.framed and len(conn.buffer) <= self.inline_bytes and not self._inline
        conn.sock.give(conn.buffer)
        conn.buffer = None
        conn.data_ready = True
        if inline:
            self._handle_inline(conn)
        else:
            self.enqueue_req(conn)
        return True

    def _handle_inline(self, conn):
        """Answer a small request here, on the loop's thread, as a request thread would.

        Requests pipelined behind it that finish_request starts reading go to
        request threads meanwhile (`_inline`), so a long pipeline never nests.
        """
        self._inline = conn.sock.inline = True
        try:
            done = Future()
            try:
                done.set_result(self.handle(conn))
            finally:
                conn.sock.inline = False  # before finish_request may hand the next request to a thread
            self.finish_request(conn, done)
        finally:
            self._inline = False

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection sends its next request: read it in the loop too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)

    def finish_request(self, conn, fs):
        if conn.sock.outgoing and conn.sock.fileno() == -1:
            conn.sock.outgoing.clear()  # gunicorn closed it on an error mid-answer: nothing more goes
        if conn.sock.outgoing:  # the answer is not all sent yet: the loop sends it, then carries on
            conn.write_deadline = time.monotonic() + self.client_timeout
            self.writing.add(conn)
            self.poller.register(conn.sock.sock, selectors.EVENT_WRITE, partial(self._on_writable, conn, fs))
            return
        # Pipelined bytes already received belong to the next request: read
        # it in the loop like any other, instead of in the thread.
        if self.alive and not fs.cancelled() and fs.exception() is None and fs.result() is True:
            ahead = conn.parser.unreader.take_buffered() + conn.sock.take_pending()
            if ahead:
                self._start_reading(conn, ahead)
                return
        super().finish_request(conn, fs)

    def _on_writable(self, conn, fs, _sock):
        try:
            done = conn.sock.flush()
        except OSError:  # the client went away
            self._drop(conn)
            return
        if done:
            self._unregister(conn)
            self.writing.discard(conn)
            self.finish_request(conn, fs)

    def linger(self, conn):
        """Half-close, then wait in the loop (at most 2 s) for the client to close too."""
        try:
            conn.sock.sock.shutdown(socket.SHUT_WR)
        except OSError:
            util.close(conn.sock.sock)
            return
        conn.linger_deadline = time.monotonic() + LINGER_SECONDS
        conn.drained = 0
        self.lingering.add(conn)
        self.poller.register(conn.sock.sock, selectors.EVENT_READ, partial(self._on_linger, conn))

    def _on_linger(self, conn, _sock):
        try:
            data = conn.sock.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > MAX_LINGER_DRAIN:
            self._end_linger(conn)

    def _end_linger(self, conn):
        self._unregister(conn)
        self.lingering.discard(conn)
        util.close(conn.sock.sock)

    def murder_pending(self):
        super().murder_pending()
        from . import metrics  # not at the top: the master imports this module before the metrics folder is set

        now = time.monotonic()
        for conn in [c for c in self.lingering if c.linger_deadline <= now]:
            self._end_linger(conn)
        for conn in [c for c in self.writing if c.write_deadline <= now]:
            metrics.CLIENT_TIMEOUTS.inc()
            self.log.warning(
                "closed connection from %s: answer not taken within %g s (DEMAND_CLIENT_TIMEOUT)",
                conn.client[0] if conn.client else "?",
                self.client_timeout,
            )
            self._drop(conn)
        for conn in [c for c in self.reading if c.sock.deadline <= now]:
            metrics.CLIENT_TIMEOUTS.inc()
            if conn.buffer:
                self._answer_and_close(
                    conn, 408, f"request not received in full within {self.client_timeout:g} s (DEMAND_CLIENT_TIMEOUT)"
                )
            else:
                self._drop(conn)

    def _answer_and_close(self, conn, status, message):
        from . import metrics  # not at the top: see murder_pending

        metrics.observe_refused(status)
        self._send_quietly(conn, json_error(status, message))
        self.log.warning("closed connection from %s: %d %s", conn.client[0] if conn.client else "?", status, message)
        self._drop(conn)

    def _unregister(self, conn):
        try:
            self.poller.unregister(conn.sock.sock)
        except (KeyError, ValueError, OSError):
            pass

    @staticmethod
    def _send_quietly(conn, data):
        try:
            conn.sock.sock.send(data)  # small: fits the socket buffer, never blocks the loop
        except OSError:
            pass

    def _drop(self, conn):
        """Close a connection the loop is reading from or writing to."""
        self._unregister(conn)
        self.reading.discard(conn)
        self.writing.discard(conn)
        self.nr_conns -= 1
        try:
            conn.sock.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.sock.close()

    def handle(self, conn):
        conn.sock.hold_head()
        try:
            return super().handle(conn)
        finally:
            try:
                conn.sock.release_head()
            except OSError:  # gunicorn closed the connection after an error: the head goes unsent
                pass

    # -- errors and shutdown

    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, JsonErrorSocket(client), addr, exc)

    def set_accept_enabled(self, enabled):
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # the loop's last turn: the worker is stopping
            self._close_listeners()

    def _close_listeners(self):
        """Take the connections already waiting on each listener, then close it.

        Closing a listener refuses new connections at once, so a client or load
        balancer retries elsewhere, but it also resets every connection still
        waiting in its queue, whose clients have often sent their request. With
        DEMAND_REUSE_PORT each worker's own socket has its own queue, which the
        kernel keeps filling until it closes, even in a reload (SIGHUP) or a
        single worker's restart while the service stays up. So the waiting
        connections are accepted first, and answered while the worker drains.
        (On the shared socket, which the master and the other workers keep
        open, this only takes connections a sibling would have answered; in a
        full stop it answers what the last worker to close would reset.) Only
        a connection that arrives in the instant between the last accept and
        the close is still reset: moving it needs the kernel's tcp_migrate_req.

        This runs on the loop's own thread: the signal handler only wakes the
        loop. Closing in the handler raced whatever step of the loop the signal
        interrupted, which then met a listener without a socket and crashed.
        """
        waiting = []
        for listener in self.sockets:
            if listener.sock is None:
                continue
            server = listener.getsockname()
            listener.setblocking(False)
            # At most what its queue can hold. Past worker_connections if need be:
            # a busy worker is where the queues are longest, and stopping, it
            # takes no more after these.
            limit = len(waiting) + self.cfg.backlog
            while len(waiting) < limit:
                try:
                    client, address = listener.accept()
                except OSError as err:
                    if err.errno == errno.ECONNABORTED:  # gone; others may wait behind it
                        continue
                    break  # none left (EAGAIN), or no descriptor for one more: the rest is refused
                waiting.append((client, address, server))
            listener.close()
        # Answered only once every listener is closed: a request answered on
        # this thread meanwhile lets its client connect again at once, and the
        # queue would never empty.
        for client, address, server in waiting:
            self._start_serving(client, address, server)

    def is_parent_alive(self):
        # The master died (SIGKILL, the OOM killer): stop as on SIGTERM, so the
        # listeners close and kept-alive clients are told "Connection: close",
        # rather than new connections hanging until the graceful timeout.
        if super().is_parent_alive():
            return True
        self.alive = False
        return False

    def handle_quit(self, sig, frame):
        # SIGQUIT or SIGINT: stop now. gunicorn exits from inside the signal
        # handler; landing while the loop's thread answers a request itself,
        # that exit would be caught by gunicorn's request handling, logged as
        # an error, and turned into a graceful stop. So the loop exits as soon
        # as that answer is out.
        if self._inline:
            self.method_queue.defer(super().handle_quit, sig, frame)
        else:
            super().handle_quit(sig, frame)
