"""Where an HTTP/1.x request ends, found in the bytes received so far.

The worker's event loop reads each request whole (head and body) before a
request thread sees it, so a client that sends slowly holds a buffer, not a
thread. This module only finds the end of the request: anything it cannot
judge, it hands over as it is, and gunicorn's own parser answers the error.
It is stricter than needed only where gunicorn would also refuse.
"""

import re

from gunicorn.http.body import CHUNK_EXT_RE
from gunicorn.http.message import RFC9110_6_5_1_FORBIDDEN_TRAILER, TOKEN_RE

MORE, COMPLETE = "more", "complete"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# gunicorn's defaults: a 4094-byte request line, 100 header fields of 8190
# bytes. A head still unfinished past this is handed over for gunicorn to refuse.
MAX_HEAD_BYTES = 4096 + 100 * 8192
MAX_CHUNK_LINE = 1024
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
BARE_LF = re.compile(rb"(?<!\r)\n")


class FramingError(Exception):
    """The request cannot be read: answered with `status` and the connection closed."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class RequestScanner:
    """Feed it the growing buffer of one connection; it says MORE or COMPLETE.

    COMPLETE also covers "hand it over as it is": a malformed head or
    framing gunicorn refuses with its own status. `framed` tells the two
    apart: True once the request's end was found by its own framing.
    """

    def __init__(self, max_body):
        self.max_body = max_body
        self.head_end = None
        self.content_length = None
        self.chunked = False
        self.expects_continue = False
        self.framed = False  # COMPLETE because the request's end was found, not handed over as it is
        self._searched = 0  # head bytes already searched for the blank line
        self._chunk_pos = None  # where the next chunk-size line starts
        self._chunk_total = 0

    def feed(self, buf):
        if self.head_end is None:
            end = buf.find(b"\r\n\r\n", max(0, self._searched - 3))
            if BARE_LF.search(buf, max(0, self._searched - 1), len(buf) if end < 0 else end):
                # gunicorn reads only CRLF lines: such a head would never end, and the client would wait for a 408.
                raise FramingError(400, "the request's head lines must end in CRLF (\\r\\n), not a bare LF")
            if end < 0:
                self._searched = len(buf)
                return COMPLETE if len(buf) > MAX_HEAD_BYTES else MORE
            self.head_end = end + 4
            # One empty line before the request line is allowed (RFC 9112 2.2), and gunicorn skips it.
            start = 2 if buf.startswith(b"\r\n") and end > 0 else 0
            if not self._read_head(bytes(buf[start:end])):
                return COMPLETE  # gunicorn answers it
        if self.chunked:
            state = self._scan_chunks(buf)
        elif self.content_length:
            state = COMPLETE if len(buf) - self.head_end >= self.content_length else MORE
        else:
            state = COMPLETE
        self.framed = state == COMPLETE
        return state

    def wants_continue(self, buf):
        """True when the client waits for 100 Continue before sending its body."""
        return self.expects_continue and self.head_end is not None and len(buf) == self.head_end

    def _read_head(self, head):
        """Note the body's framing. False when the head is one gunicorn refuses."""
        lines = head.split(b"\r\n")
        if not lines[0]:
            return False  # no request line: gunicorn refuses it
        request_line = lines[0].split(b" ")
        lengths, codings = [], []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                return False
            name, value = name.lower(), value.strip()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings.append(value.lower())
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expects_continue = request_line[-1] == b"HTTP/1.1"
        if codings:
            if lengths:
                return False  # both framings: gunicorn refuses the head at once
            listed = [c.strip() for value in codings for c in value.split(b",") if c.strip()]
            if not listed or listed[-1] != b"chunked":
                # Without chunked last the body's end cannot be found, and
                # gunicorn would read it in a request thread at the client's pace.
                raise FramingError(
                    501,
                    f"Transfer-Encoding {b', '.join(listed).decode('latin-1')[:64]!r} is not "
                    "supported: send the body with Content-Length or chunked",
                )
            self.chunked, self._chunk_pos = True, self.head_end  # the codings before it, gunicorn checks
            return True
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            return False
        self.content_length = int(lengths[0]) if lengths else 0
        if self.content_length > self.max_body:
            raise FramingError(
                413,
                f"request body of {self.content_length} bytes is larger than the limit of "
                f"{self.max_body} bytes (DEMAND_MAX_BODY_BYTES)",
            )
        return True

    def _scan_chunks(self, buf):
        pos = self._chunk_pos
        while True:
            eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE)
            if eol < 0:
                if len(buf) - pos >= MAX_CHUNK_LINE:
                    raise FramingError(400, "invalid chunked body: chunk-size line too long")
                break
            size_text, semicolon, extension = bytes(buf[pos:eol]).partition(b";")
            if semicolon:  # spaces before an extension are allowed (RFC 9112 7.1.1), as gunicorn allows them
                size_text = size_text.rstrip(b" \t")
            if not CHUNK_SIZE.fullmatch(size_text):
                raise FramingError(400, f"invalid chunked body: bad chunk size {size_text[:32]!r}")
            # Checked here by gunicorn's own rules: refused later, in the app's
            # read of the body, it was a 500 that kept the connection open.
            if semicolon and not CHUNK_EXT_RE.fullmatch(b";" + extension):
                raise FramingError(400, f"invalid chunked body: bad chunk extension {extension[:32]!r}")
            size = int(size_text, 16)
            if size == 0:
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    return COMPLETE
                trailer_end = buf.find(b"\r\n\r\n", eol)
                if trailer_end >= 0:
                    _check_trailers(bytes(buf[eol + 2 : trailer_end]))
                    return COMPLETE
                if len(buf) - eol > MAX_HEAD_BYTES:
                    raise FramingError(431, "chunked body trailers too large")
                break
            self._chunk_total += size
            if self._chunk_total > self.max_body:
                raise FramingError(
                    413, f"chunked request body larger than the limit of {self.max_body} bytes (DEMAND_MAX_BODY_BYTES)"
                )
            data_end = eol + 2 + size
            if len(buf) < data_end + 2:
                self._chunk_total -= size  # counted again when the chunk is complete
                break
            if buf[data_end : data_end + 2] != b"\r\n":
                raise FramingError(400, "invalid chunked body: chunk data not followed by CRLF")
            pos = data_end + 2
        self._chunk_pos = pos
        return MORE


def _check_trailers(section):
    """400 for a trailer field gunicorn refuses: a name that is not a token, or one
    RFC 9110 6.5.1 forbids in trailers (Content-Length, Host...)."""
    for line in section.split(b"\r\n"):
        name, colon, _ = line.decode("latin-1").partition(":")
        if not colon or not TOKEN_RE.fullmatch(name) or name.upper() in RFC9110_6_5_1_FORBIDDEN_TRAILER:
            raise FramingError(400, f"invalid chunked body: bad trailer field {name[:40]!r}")
