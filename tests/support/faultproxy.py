"""A small HTTP proxy in front of the moto server that injects AWS faults and latency.

Every request (method, path, query, headers, body) is forwarded to the target and the
response relayed, except when a rule says otherwise. Stdlib only, so the benchmark can
use it too:

    proxy = FaultProxy(moto_url).start()
    proxy.url                                   # point AWS_ENDPOINT_URL here
    proxy.fail("CreateVpc", times=2, kind="throttle")
    proxy.fail("ec2:DescribeVpcs", kind="access_denied")   # service-qualified
    proxy.fail("DescribeDBInstances", times=None, kind="server_error")  # until reset
    proxy.delay("CreateDBInstance", 2.0)        # seconds added to each such call
    proxy.latency = 0.01                        # seconds added to every call
    proxy.calls["CreateVpc"]                    # calls seen (faulted ones included)
    proxy.faults["CreateVpc"]                   # faults injected
    proxy.reset_rules(); proxy.reset_counts(); proxy.stop()

Operations are named as AWS names them (`CreateVpc`, `DescribeRepositories`). They are
read from the request: `Action=` in the form body or query string (query and EC2
protocols), the `X-Amz-Target` header (JSON protocol), or the path
`/service/NAME/operation/OP` (Smithy RPC v2 CBOR, which botocore uses for CloudWatch and
the tagging API). REST services (S3, Route 53, Lambda...) carry no operation name; their
calls are counted as `"<service> <METHOD>"`, e.g. `"s3 PUT"`, and rules can use that key.
The service comes from the SigV4 credential scope (`ec2`, `rds`, `logs`, `monitoring`,
`tagging`, `elasticloadbalancing`...). A rule key is an operation name, `service:Operation`,
or `*` for every call.

Fault kinds and what botocore parses from them:
- `throttle`: 400, `RequestLimitExceeded` (EC2), `Throttling` (other query services),
  `ThrottlingException` (JSON, CBOR, REST-JSON), `SlowDown` (S3, status 503).
- `server_error`: 500, `InternalError` (EC2, S3) or `InternalFailure`.
- `unavailable`: 503, `Unavailable` (EC2), `ServiceUnavailable` (query, REST-XML) or
  `ServiceUnavailableException`.
- `access_denied`: 403, `UnauthorizedOperation` (EC2), `AccessDenied` (query, REST-XML)
  or `AccessDeniedException`.
- `disconnect`: the connection is closed without an answer.
`code=`, `status=` and `message=` override the defaults.

Held calls (delay, latency) stop waiting when the rules are reset; a held call whose caller
has hung up meanwhile (a killed process) is dropped, never forwarded, and recorded with
status 499.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from ecsflow.ecs_standin import Answer, forwarded_headers, relay, send_relayed

KINDS = ("throttle", "server_error", "unavailable", "access_denied", "disconnect")

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_CBOR_PATH = re.compile(r"^/service/[^/]+/operation/([^/?]+)")
_REST_XML_SERVICES = {"s3", "route53", "cloudfront"}


@dataclass
class _Fault:
    kind: str
    remaining: int | None  # None: every call until the rules are reset
    status: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Call:
    """One request the proxy saw."""

    service: str
    operation: str
    protocol: str
    status: int  # 0 for a dropped connection
    fault: str | None
    seconds: float


@dataclass(frozen=True)
class _Request:
    service: str
    operation: str
    protocol: str  # ec2 | query | json | cbor | rest-xml | rest-json


def _encode_cbor_text_map(values: dict[str, str]) -> bytes:
    """CBOR for a flat map of text strings, the shape of an RPC v2 CBOR error body."""

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 0x100:
            return bytes([major << 5 | 24, n])
        if n < 0x10000:
            return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")

    out = bytearray(head(5, len(values)))
    for key, value in values.items():
        for text in (key, value):
            raw = text.encode()
            out += head(3, len(raw)) + raw
    return bytes(out)


def classify(method: str, path: str, headers: dict[str, str], body: bytes) -> _Request:
    """Which service and operation a botocore request is for, and in which protocol."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _CREDENTIAL_SCOPE.search(lower.get("authorization", ""))
    parsed = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(parsed.query)
    if match:
        service = match.group(1)
    else:
        scope = query.get("X-Amz-Credential", [""])[0].split("/")
        service = scope[3] if len(scope) > 3 else "unknown"

    target = lower.get("x-amz-target")
    if target:
        return _Request(service, target.rsplit(".", 1)[-1], "json")
    cbor = _CBOR_PATH.match(parsed.path)
    if cbor:
        return _Request(service, cbor.group(1), "cbor")
    action = query.get("Action", [None])[0]
    content_type = lower.get("content-type", "")
    if action is None and body and "x-www-form-urlencoded" in content_type:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action", [None])[0]
    if action:
        return _Request(service, action, "ec2" if service == "ec2" else "query")
    protocol = "rest-xml" if service in _REST_XML_SERVICES else "rest-json"
    return _Request(service, f"{service} {method}", protocol)


def _error_code(kind: str, protocol: str, service: str) -> tuple[int, str]:
    ec2, xml = protocol == "ec2", protocol in ("query", "rest-xml")
    if kind == "throttle":
        if service == "s3":
            return 503, "SlowDown"
        return 400, "RequestLimitExceeded" if ec2 else "Throttling" if xml else "ThrottlingException"
    if kind == "server_error":
        return 500, "InternalError" if ec2 or service == "s3" else "InternalFailure"
    if kind == "unavailable":
        return 503, "Unavailable" if ec2 else "ServiceUnavailable" if xml else "ServiceUnavailableException"
    if kind == "access_denied":
        return 403, "UnauthorizedOperation" if ec2 else "AccessDenied" if xml else "AccessDeniedException"
    raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(KINDS)}")


def error_response(kind: str, request: _Request, *, status: int | None = None, code: str | None = None,
                   message: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an AWS error as the request's protocol carries it."""
    default_status, default_code = _error_code(kind, request.protocol, request.service)
    status = status or default_status
    code = code or default_code
    message = message or f"Injected {kind} fault for {request.operation}"
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id, "x-amz-request-id": request_id}
    if request.protocol == "ec2":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{escape(code)}"
                f"</Code><Message>{escape(message)}</Message></Error></Errors>"
                f"<RequestID>{request_id}</RequestID></Response>").encode()
        headers["Content-Type"] = "text/xml;charset=UTF-8"
    elif request.protocol in ("query", "rest-xml"):
        side = "Receiver" if status >= 500 else "Sender"
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>{side}</Type>"
                f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
        headers["Content-Type"] = "text/xml"
    elif request.protocol == "cbor":
        body = _encode_cbor_text_map({"__type": code, "message": message})
        headers["Content-Type"] = "application/cbor"
        headers["smithy-protocol"] = "rpc-v2-cbor"
    elif request.protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers["Content-Type"] = "application/x-amz-json-1.1"
    else:  # rest-json
        body = json.dumps({"message": message}).encode()
        headers["Content-Type"] = "application/json"
        headers["x-amzn-ErrorType"] = code
    return status, headers, body


class FaultProxy:
    """Forwards AWS API calls to `target_url`, injecting faults and delays by rule."""

    def __init__(self, target_url: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 120.0) -> None:
        target = urllib.parse.urlsplit(target_url)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"FaultProxy forwards to plain http:// targets, not {target_url!r}")
        self.target_host = target.hostname
        self.target_port = target.port or 80
        self.target_url = target_url.rstrip("/")
        self.timeout = timeout
        self.latency = 0.0
        self.calls: Counter[str] = Counter()
        self.service_calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.history: list[Call] = []
        self._lock = threading.Lock()
        self._rules_reset = threading.Condition(self._lock)
        self._generation = 0  # bumped by reset_rules(): delayed calls stop waiting
        self._faults: dict[str, list[_Fault]] = {}
        self._delays: dict[str, float] = {}
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host!s}:{self.port}"

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"fault-proxy-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ rules

    def fail(self, operation: str, times: int | None = 1, kind: str = "throttle", *, status: int | None = None,
             code: str | None = None, message: str | None = None) -> None:
        """Answer the next `times` calls of `operation` (None: all of them) with a fault.
        Several rules for one operation are used in the order they were added."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(KINDS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every call)")
        with self._lock:
            self._faults.setdefault(operation, []).append(_Fault(kind, times, status, code, message))

    def delay(self, operation: str, seconds: float) -> None:
        """Hold every call of `operation` for `seconds` before forwarding it (0 removes the delay)."""
        with self._lock:
            if seconds > 0:
                self._delays[operation] = seconds
            else:
                self._delays.pop(operation, None)

    def pending_faults(self) -> int:
        """Faults still to be injected (rules with times=None count as one)."""
        with self._lock:
            return sum(f.remaining or 1 for rules in self._faults.values() for f in rules)

    def reset_rules(self) -> None:
        """Forget every fault, delay and the global latency."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self.latency = 0.0
            self._generation += 1
            self._rules_reset.notify_all()

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.service_calls.clear()
            self.faults.clear()
            self.history.clear()

    def reset(self) -> None:
        self.reset_rules()
        self.reset_counts()

    # ------------------------------------------------------------ the work

    def _decide(self, req: _Request) -> tuple[_Fault | None, float, int]:
        keys = (f"{req.service}:{req.operation}", req.operation, "*")
        with self._lock:
            generation = self._generation
            self.calls[req.operation] += 1
            self.service_calls[f"{req.service}:{req.operation}"] += 1
            wait = self.latency + max((self._delays.get(k, 0.0) for k in keys), default=0.0)
            for key in keys:
                rules = self._faults.get(key)
                if not rules:
                    continue
                fault = rules[0]
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        rules.pop(0)
                        if not rules:
                            del self._faults[key]
                self.faults[req.operation] += 1
                return fault, wait, generation
        return None, wait, generation

    def _wait(self, seconds: float, generation: int) -> None:
        """Sleep, but stop as soon as the rules are reset."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while self._generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._rules_reset.wait(remaining)

    def _record(self, call: Call) -> None:
        with self._lock:
            self.history.append(call)

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        return relay(self.target_host, self.target_port, method, path, headers, body, self.timeout)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "FaultProxy/1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _client_gone(self) -> bool:
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                started = time.monotonic()
                body = self._read_body()
                req = classify(self.command, self.path, dict(self.headers.items()), body)
                fault, wait, generation = proxy._decide(req)
                if wait:
                    proxy._wait(wait, generation)
                    if self._client_gone():
                        # The caller hung up (or was killed) while its call was held: as with
                        # a request lost on the way, AWS never sees it.
                        proxy._record(Call(req.service, req.operation, req.protocol, 499, None,
                                           time.monotonic() - started))
                        self.close_connection = True
                        return
                if fault is not None and fault.kind == "disconnect":
                    proxy._record(Call(req.service, req.operation, req.protocol, 0, fault.kind,
                                       time.monotonic() - started))
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    status, headers, data = error_response(fault.kind, req, status=fault.status, code=fault.code,
                                                           message=fault.message)
                    # Recorded before answering, so a test sees it as soon as its call returns.
                    proxy._record(Call(req.service, req.operation, req.protocol, status, fault.kind,
                                       time.monotonic() - started))
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                try:
                    answer = proxy._forward(self.command, self.path, forwarded_headers(self), body)
                except OSError as exc:
                    msg = f"fault proxy could not reach {proxy.target_url}: {exc}".encode()
                    proxy._record(Call(req.service, req.operation, req.protocol, 502, None,
                                       time.monotonic() - started))
                    self.send_response(502)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                proxy._record(Call(req.service, req.operation, req.protocol, answer[0], None,
                                   time.monotonic() - started))
                send_relayed(self, answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        return Handler
