"""An authorization server the end-to-end tests script: its introspection
endpoint (RFC 7662) and token endpoint (RFC 8693 token exchange) answer as
each test says — rightly, wrongly, slowly, or not at all — and it records
every call it gets (form fields parsed, headers kept), so a test can prove
what the filter asked and how often."""

import json
import threading
import time
import urllib.parse

from harness import Handler, HttpServer

INTROSPECT_PATH = "/realms/mcp/introspect"
TOKEN_PATH = "/realms/mcp/token"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class Reply:
    """One scripted answer: status, body (a dict is sent as JSON, bytes as
    they are), content type, extra headers, a delay before it, or a reset
    instead of it."""

    def __init__(self, status=200, body=None, content_type="application/json", headers=None, delay=0.0,
                 reset=False):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers, self.delay, self.reset = headers or {}, delay, reset

    def bytes(self):
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode()
        return self.body or b""


class _Handler(Handler):
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # and the client's delayed ACK hold the second back by tens of ms.
    disable_nagle_algorithm = True

    def do_GET(self):
        self.respond({})

    def do_POST(self):
        form = urllib.parse.parse_qs(self.read_body().decode(errors="replace"), keep_blank_values=True)
        self.respond({k: v[0] if len(v) == 1 else v for k, v in form.items()})

    def respond(self, form):
        call = {"method": self.command, "path": self.path, "form": form,
                "headers": {k.lower(): v for k, v in self.headers.items()}}
        with self.owner.lock:
            self.owner.calls.append(call)
        reply = self.owner.script(call)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.reset:
            self.reset()
            return
        body = reply.bytes()
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class ScriptedAuthorizationServer:
    """Answers introspection from `self.introspect` (token -> Reply, or a
    callable of the call), token exchange from `self.exchange` (a callable
    of the call), metadata documents from `self.metadata`; anything else is
    404."""

    def __init__(self, issuer):
        self.issuer = issuer
        self.calls = []
        self.lock = threading.Lock()
        self.introspect = {}
        self.exchange = lambda call: Reply(400, {"error": "unsupported_grant_type"})
        self.metadata = {}
        self.server = HttpServer(_Handler, owner=self)
        self.port = self.server.port

    def script(self, call):
        path = call["path"]
        if path == INTROSPECT_PATH:
            token = call["form"].get("token")
            answer = self.introspect.get(token, Reply(200, {"active": False}))
            return answer(call) if callable(answer) else answer
        if path == TOKEN_PATH:
            return self.exchange(call)
        if path in self.metadata:
            return Reply(200, self.metadata[path])
        return Reply(404, {"error": "not_found"})

    def calls_to(self, path):
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def clear(self):
        with self.lock:
            self.calls.clear()

    def close(self):
        self.server.close()


def active(issuer, audience, sub="alice", roles=("reader",), scope="mcp:read", ttl=300, **extra):
    """An RFC 7662 "active" answer as Keycloak and oidc-provider give it."""
    now = int(time.time())
    body = {"active": True, "iss": issuer, "aud": audience, "sub": sub, "client_id": "cli",
            "scope": scope, "token_type": "Bearer", "iat": now, "exp": now + ttl,
            "realm_access": {"roles": list(roles)}}
    body.update(extra)
    return body


def exchanged(token, expires_in=300, **extra):
    """An RFC 8693 exchange answer."""
    body = {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
            "expires_in": expires_in}
    body.update(extra)
    return body
