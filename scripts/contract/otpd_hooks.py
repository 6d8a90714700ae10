"""Schemathesis hooks for the API-contract run (`scripts/contract.sh`).

* Authentication: operations that need an access token get one from a real sign-up (register an
  e-mail address, read its code from the node's development outbox, verify it), renewed every
  minute (device enrolment needs a login by code less than 5 minutes old) and whenever the
  node answers 401 (after a generated `POST /v1/logout` revoked it). `/v1/admin/*` gets the
  node's admin token. Each token response of a sign-up is validated against the document.
* Counting: every request schemathesis sends is counted into `$OTPD_CONTRACT_COUNT`.

Environment: OTPD_BASE_URL, OTPD_DATA_DIR (the node's data directory), OTPD_CONTRACT_COUNT.
"""

import http.client
import itertools
import json
import os
import threading
import time
import urllib.parse

import jsonschema
import schemathesis

BASE = os.environ["OTPD_BASE_URL"]
DATA_DIR = os.environ["OTPD_DATA_DIR"]
COUNT_FILE = os.environ["OTPD_CONTRACT_COUNT"]

_ids = itertools.count()
_lock = threading.Lock()
_sent = 0
_document = None


def _call(method, path, body=None, source="127.0.0.1"):
    """One request to the node from the loopback address `source`."""
    url = urllib.parse.urlsplit(BASE)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10, source_address=(source, 0))
    try:
        headers = {} if body is None else {"content-type": "application/json"}
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _client_address(n):
    """A loopback address of its own for sign-up `n` (127.1.0.1, 127.1.0.2, …).

    The node's per-IP limits are on during the run, and schemathesis' own requests all come
    from 127.0.0.1: once its generated sends have used up that address' allowance, a sign-up
    from it would be refused with 429 like any other client's. Each sign-up is a different
    client, as on a real deployment.
    """
    n = n % (255 * 256) + 1
    return f"127.1.{n // 256}.{n % 256 or 1}"


def _check(schema_name, instance):
    """Validates a reply of the sign-up against the served document's schema."""
    global _document
    if _document is None:
        _document = _call("GET", "/openapi.json")[1]
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _document["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


def _code_for(address, deadline=10.0):
    """The newest code the development outbox holds for `address`."""
    outbox = os.path.join(DATA_DIR, "outbox.jsonl")
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            with open(outbox, encoding="utf-8") as f:
                codes = [m["code"] for m in map(json.loads, f) if m.get("to") == address]
        except FileNotFoundError:
            codes = []
        if codes:
            return codes[-1]
        time.sleep(0.02)
    raise RuntimeError(f"no code reached the outbox for {address}")


def sign_up():
    """A fresh account, signed in by code: its access token."""
    n = next(_ids)
    address = f"contract-{os.getpid()}-{n}-{time.time_ns()}@example.com"
    source = _client_address(n)
    body = {"email": address, "first_name": "Contract", "last_name": "Run"}
    status, body = _call("POST", "/v1/register", body, source)
    if status != 202:
        raise RuntimeError(f"sign-up: POST /v1/register answered {status}: {body}")
    _check("SendResponse", body)
    status, body = _call("POST", "/v1/register/verify", {"email": address, "code": _code_for(address)}, source)
    if status != 200:
        raise RuntimeError(f"sign-up: POST /v1/register/verify answered {status}: {body}")
    _check("TokenResponse", body)
    return body["access_token"]


def _admin_token():
    with open(os.path.join(DATA_DIR, "secrets", "admin.token"), encoding="utf-8") as f:
        return f.read().strip()


def _is_admin(context):
    return context.operation.path.startswith("/v1/admin/")


# The operations the document secures (`bearer` or `admin`); the others go without.
SECURED = r"^/v1/(me|logout|sessions|devices|admin/)"


@schemathesis.auth(
    refresh_interval=60, cache_by_key=lambda case, context: "admin" if _is_admin(context) else "user"
).apply_to(path_regex=SECURED)
class OtpdAuth:
    def get(self, case, context):
        return _admin_token() if _is_admin(context) else sign_up()

    def set(self, case, data, context):
        case.headers = dict(case.headers or {})
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def after_call(context, case, response):
    global _sent
    with _lock:
        _sent += 1
        with open(COUNT_FILE, "w", encoding="utf-8") as f:
            f.write(str(_sent))
