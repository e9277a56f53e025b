#!/usr/bin/env python3
"""Small stand-ins for the third-party APIs the example functions call, on loopback.

The examples' functions call real HTTP APIs through Eddy's outbound HTTP; the demo and the tests
point them at this server instead of the real services:

  GET  /users/<id>                 a users API: 200 {"id", "name", "email"}, 404 if unknown
  POST /v3/<domain>/messages       a Mailgun-shaped mail API: form fields from, to, subject,
                                   text; HTTP Basic user "api", password the key
  POST /v1/charges                 a payments API: JSON {"orderId", "amount"}; bearer key;
                                   402 {"reason"} over --decline-over, else 200 {"id"}
  POST /v1/refunds                 JSON {"charge"}: 200 {"id"}
  GET  /_messages, /_charges       what was accepted so far (for the demo and the tests)

  python3 examples/fake_apis.py --port 0 --key KEY [--mail-fail N] [--decline-over 500]

It prints "listening on http://127.0.0.1:PORT" once ready. --mail-fail N answers the first N
messages 503 (a mail API having a bad minute), so a caller's retries can be seen.
"""

import argparse
import base64
import itertools
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

USERS = {
    "u-1": {"id": "u-1", "name": "Ada Lovelace", "email": "ada@example.com"},
    "u-2": {"id": "u-2", "name": "Grace Hopper", "email": "grace@example.com"},
    "u-42": {"id": "u-42", "name": "Alan Turing", "email": "alan@example.com"},
}


class State:
    def __init__(self, key, mail_fail, decline_over):
        self.key = key
        self.mail_fail = mail_fail
        self.decline_over = decline_over
        self.messages = []
        self.charges = []
        self.mail_attempts = 0
        self.ids = itertools.count(1)
        self.lock = threading.Lock()


def handler_for(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            # Headers and body go out in two writes: without this, Nagle's algorithm and the
            # client's delayed ACK hold the body back some 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def body(self):
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    chunk = self.rfile.read(size + 2)
                    if size == 0:
                        return data
                    data += chunk[:-2]
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def answer(self, status, value):
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self, scheme):
            given = self.headers.get("authorization", "")
            if scheme == "Basic":
                expected = "Basic " + base64.b64encode(f"api:{state.key}".encode()).decode()
            else:
                expected = f"Bearer {state.key}"
            return given == expected

        def do_GET(self):
            if self.path.startswith("/users/"):
                user = USERS.get(self.path[len("/users/"):])
                if user:
                    self.answer(200, user)
                else:
                    self.answer(404, {"error": "no such user"})
            elif self.path == "/_messages":
                with state.lock:
                    self.answer(200, {"messages": state.messages, "attempts": state.mail_attempts})
            elif self.path == "/_charges":
                with state.lock:
                    self.answer(200, {"charges": state.charges})
            else:
                self.answer(404, {"error": "no such endpoint"})

        def do_POST(self):
            body = self.body()
            parts = self.path.split("/")
            if len(parts) == 4 and parts[1] == "v3" and parts[3] == "messages":
                if not self.authorized("Basic"):
                    return self.answer(401, {"message": "Forbidden"})
                with state.lock:
                    state.mail_attempts += 1
                    if state.mail_attempts <= state.mail_fail:
                        return self.answer(503, {"message": "Service Unavailable"})
                    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    message = {"id": f"<{next(state.ids)}@{parts[2]}>", "domain": parts[2], **form}
                    state.messages.append(message)
                return self.answer(200, {"id": message["id"], "message": "Queued. Thank you."})
            if self.path in ("/v1/charges", "/v1/refunds"):
                if not self.authorized("Bearer"):
                    return self.answer(401, {"error": "bad key"})
                request = json.loads(body or b"{}")
                with state.lock:
                    if self.path == "/v1/charges" and float(request.get("amount", 0)) > state.decline_over:
                        return self.answer(402, {"reason": f"card declined: over {state.decline_over:.2f}"})
                    record = {"id": f"ch_{next(state.ids)}", "kind": self.path[4:-1], **request}
                    state.charges.append(record)
                return self.answer(200, {"id": record["id"]})
            self.answer(404, {"error": "no such endpoint"})

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", required=True, help="the API key the callers must present")
    parser.add_argument("--mail-fail", type=int, default=0, help="answer the first N messages 503")
    parser.add_argument("--decline-over", type=float, default=500.0)
    args = parser.parse_args()
    state = State(args.key, args.mail_fail, args.decline_over)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(state))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
