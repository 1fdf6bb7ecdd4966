#!/usr/bin/env python3
"""Cross-check: requests signed by the providers' official libraries, sent to
a running switchyard gateway.

Every genuine request must be accepted (202, and 200 "duplicate" for a resend
of a request with a delivery id); every tampered one must be refused with the
right code (401 missing_signature, malformed_signature, invalid_signature or
timestamp_out_of_tolerance).

Who signs:
  github             @octokit/webhooks-methods sign() (node, via github.mjs)
  stripe             stripe.WebhookSignature.generate_signature_header
  slack              slack_sdk.signature.SignatureVerifier.generate_signature
  standard-webhooks  standardwebhooks.Webhook.sign
  svix               svix.webhooks.Webhook.sign (svix-* headers)
  twilio             twilio.request_validator.RequestValidator.compute_signature
                     (and compute_hash for the bodySHA256 form)
  shopify, gitlab,   no official signing library exists (Shopify's and
  hmac               GitLab's libraries only verify, and hmac is our own
                     scheme): signed with Python's hmac module here.

usage:
  CROSSCHECK_SECRETS='{"<source>": ["primary", "rotated"], ...}' \\
  crosscheck.py --base-url http://127.0.0.1:PORT --github-signed FILE \\
                --twilio-public-url http://127.0.0.1/hooks/twilio \\
                --twilio-port-public-url http://127.0.0.1:8443/hooks/twilio-port

Each source is at /hooks/<source> and has one route, "<source>-crosscheck".
Prints one line per case and ends with "crosscheck: N passed, M failed";
exits 0 only when nothing failed. Sends traffic to 127.0.0.1 only.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timezone

import slack_sdk
import standardwebhooks
import stripe
import svix
import twilio
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook
from twilio.request_validator import RequestValidator

# Ten minutes either way: twice the gateway's default tolerance (5m).
SKEW_SECONDS = 600
REQUEST_TIMEOUT_SECONDS = 10

# Secrets no source is configured with ("signed with another secret").
OTHER = {
    "stripe": "whsec_crosscheck_not_a_configured_secret",
    "slack": "0123456789abcdef0123456789abcdef",
    "standard": "whsec_" + base64.b64encode(b"crosscheck: not a configured key!").decode(),
    "twilio": "ffffffffffffffffffffffffffffffff",
    "shopify": "shpss_not_a_configured_secret",
    "gitlab": "not-a-configured-gitlab-token",
    "hmac": "not-a-configured-hmac-key",
}


def now() -> int:
    return int(time.time())


def fresh_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def tamper(body: bytes) -> bytes:
    """The body with its last letter or digit changed: one byte differs, and
    JSON stays JSON, form stays form."""
    data = bytearray(body)
    for i in range(len(data) - 1, -1, -1):
        c = data[i]
        if ord("0") <= c <= ord("9"):
            data[i] = ord("0") + (c - ord("0") + 1) % 10
            return bytes(data)
        if ord("a") <= c <= ord("z"):
            data[i] = ord("a") + (c - ord("a") + 1) % 26
            return bytes(data)
        if ord("A") <= c <= ord("Z"):
            data[i] = ord("A") + (c - ord("A") + 1) % 26
            return bytes(data)
    raise ValueError("body has no letter or digit to change")


class Request:
    """One request to send: path (with query), headers in order, body bytes."""

    def __init__(self, path: str, headers: list, body: bytes):
        self.path = path
        self.headers = list(headers)
        self.body = body

    def without(self, name: str) -> "Request":
        return Request(self.path, [(n, v) for n, v in self.headers if n.lower() != name.lower()], self.body)

    def replacing(self, name: str, value) -> "Request":
        return Request(self.path, self.without(name).headers + [(name, value)], self.body)

    def with_body(self, body: bytes) -> "Request":
        return Request(self.path, self.headers, body)

    def header(self, name: str) -> str:
        return next(v for n, v in self.headers if n.lower() == name.lower())


class Gateway:
    def __init__(self, base_url: str):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or parsed.hostname != "127.0.0.1" or not parsed.port:
            sys.exit(f"crosscheck: refusing base URL {base_url!r}: only http://127.0.0.1:PORT is allowed")
        self.port = parsed.port

    def send(self, request: Request):
        """POSTs `request`; returns (status, parsed JSON body or raw text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            # putheader takes bytes as is, so a test can send non-ASCII values.
            conn.putrequest("POST", request.path, skip_accept_encoding=True)
            for name, value in request.headers:
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(request.body)))
            conn.endheaders(request.body)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
        except OSError as err:
            return None, f"no answer: {err}"
        finally:
            conn.close()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def record(self, scheme: str, case: str, expected: str, status, body, ok: bool):
        if ok:
            self.passed += 1
            print(f"ok {scheme} {case}", flush=True)
        else:
            self.failed += 1
            got = f"{status} {json.dumps(body) if not isinstance(body, str) else body}"
            print(f"FAIL {scheme} {case}: expected {expected} got {got[:400]}", flush=True)


class Checker:
    def __init__(self, gateway: Gateway, report: Report):
        self.gateway = gateway
        self.report = report

    def accepted(self, scheme: str, case: str, request: Request):
        """Expects 202 {"id", "routes": ["<scheme>-crosscheck"]}; returns the id."""
        status, body = self.gateway.send(request)
        route = f"{scheme}-crosscheck"
        ok = (
            status == 202
            and isinstance(body, dict)
            and isinstance(body.get("id"), str)
            and body["id"] != ""
            and body.get("routes") == [route]
        )
        self.report.record(scheme, case, f'202 {{"id": …, "routes": ["{route}"]}}', status, body, ok)
        return body["id"] if ok else None

    def duplicate(self, scheme: str, case: str, request: Request, first_id):
        status, body = self.gateway.send(request)
        ok = first_id is not None and status == 200 and body == {"id": first_id, "duplicate": True}
        expected = f'200 {{"id": "{first_id}", "duplicate": true}}'
        self.report.record(scheme, case, expected, status, body, ok)

    def accepted_then_duplicate(self, scheme: str, case: str, request: Request):
        first_id = self.accepted(scheme, case, request)
        self.duplicate(scheme, f"{case}-resent", request, first_id)

    def refused(self, scheme: str, case: str, request: Request, code: str):
        status, body = self.gateway.send(request)
        ok = status == 401 and isinstance(body, dict) and body.get("error") == code
        self.report.record(scheme, case, f"401 {code}", status, body, ok)

    def refused_by_library_and_gateway(
        self, scheme: str, case: str, request: Request, library_refuses: bool, code="malformed_signature"
    ):
        """A request the provider's own verifier refuses: so must the gateway."""
        self.report.record(scheme, f"{case}-by-library", "the official library refuses it", "it accepts it", "", library_refuses)
        self.refused(scheme, case, request, code)


class Scheme:
    """A source under test. `sign(role, delivery_id, timestamp)` returns a
    genuine Request signed with the secret of `role`: primary (first
    configured), rotated (second configured) or other (unknown)."""

    name = ""
    signature_header = ""
    garbage = b""
    timestamped = False
    # Which OTHER secret signs role "other".
    other_key = ""

    def __init__(self, secrets):
        self.secrets = {"primary": secrets[0], "rotated": secrets[1]}

    def secret(self, role: str) -> str:
        return self.secrets.get(role) or OTHER[self.other_key]

    def sign(self, role: str, delivery_id: str, timestamp: int) -> Request:
        raise NotImplementedError

    def extra_cases(self, check: Checker):
        pass


def json_event(delivery_id: str, kind: str) -> bytes:
    return json.dumps(
        {"id": delivery_id, "type": kind, "data": {"note": "crosscheck ✓ café", "amount": 1299}},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


class Github(Scheme):
    name = "github"
    signature_header = "X-Hub-Signature-256"
    garbage = b"sha256=not-hex-at-all"

    def __init__(self, secrets, signed, uppercase):
        super().__init__(secrets)
        self.signed = signed
        self.uppercase = uppercase

    def sign(self, role, delivery_id, timestamp):
        # Signed by @octokit/webhooks-methods in github.mjs. GitHub does not
        # sign the delivery id, so any one may go with a payload.
        fixture = self.signed[role]
        headers = [
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "issues"),
            ("X-GitHub-Delivery", delivery_id),
            ("X-Hub-Signature-256", fixture["signature"]),
        ]
        return Request("/hooks/github", headers, fixture["payload"].encode("utf-8"))

    def extra_cases(self, check):
        # The genuine signature in uppercase hex, which octokit's verify() refuses.
        request = self.sign("primary", fresh_id("gh-"), now()).replacing(
            "X-Hub-Signature-256", self.uppercase["signature"]
        )
        check.refused_by_library_and_gateway(
            self.name, "uppercase-hex", request, not self.uppercase["library_accepts"]
        )


class Stripe(Scheme):
    name = "stripe"
    signature_header = "Stripe-Signature"
    timestamped = True
    other_key = "stripe"

    @property
    def garbage(self):
        return f"t={now()},v1=not-hex-at-all".encode()

    def sign(self, role, delivery_id, timestamp):
        # Stripe dedupes on the event id inside the body.
        payload = json_event(delivery_id, "invoice.paid").decode("utf-8")
        header = stripe.WebhookSignature.generate_signature_header(payload, self.secret(role), timestamp=timestamp)
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Stripe-Signature", header)]
        return Request("/hooks/stripe", headers, payload.encode("utf-8"))

    def extra_cases(self, check):
        # While a secret is rolled Stripe sends one v1 per secret; any may match.
        event_id = fresh_id("evt_")
        payload = json_event(event_id, "invoice.paid").decode("utf-8")
        t = now()
        signed = f"{t}.{payload}"
        unknown = stripe.WebhookSignature._compute_signature(signed, OTHER["stripe"])
        known = stripe.WebhookSignature._compute_signature(signed, self.secret("rotated"))
        header = f"t={t},v1={unknown},v1={known},v0={unknown}"
        request = Request("/hooks/stripe", [("Stripe-Signature", header)], payload.encode("utf-8"))
        check.accepted_then_duplicate(self.name, "several-v1-one-matches", request)
        # A non-numeric timestamp that is genuinely signed is still malformed.
        check.refused(
            self.name, "non-numeric-timestamp", self.sign("primary", fresh_id("evt_"), "soon"), "malformed_signature"
        )
        # The genuine v1 in uppercase hex: Stripe's verify_header refuses it.
        genuine = self.sign("primary", fresh_id("evt_"), now())
        stamp, v1 = genuine.header("Stripe-Signature").split(",v1=")
        upper = f"{stamp},v1={v1.upper()}"
        try:
            stripe.WebhookSignature.verify_header(genuine.body.decode("utf-8"), upper, self.secret("primary"), 300)
            library_refuses = False
        except stripe.SignatureVerificationError:
            library_refuses = True
        check.refused_by_library_and_gateway(
            self.name, "uppercase-hex", genuine.replacing("Stripe-Signature", upper), library_refuses
        )


class Slack(Scheme):
    name = "slack"
    signature_header = "X-Slack-Signature"
    garbage = b"v0=not-hex-at-all"
    timestamped = True
    other_key = "slack"

    def sign(self, role, delivery_id, timestamp):
        # A slash command, form-encoded as Slack sends it; the trigger id
        # makes each request (and so its timestamp:signature id) unique.
        body = urllib.parse.urlencode(
            {
                "token": "gIkuvaNzQIHg97ATvDxqgjtO",
                "team_id": "T0001",
                "command": "/weather",
                "text": "94070 café & more",
                "response_url": "https://hooks.slack.com/commands/1234/5678",
                "trigger_id": delivery_id,
            }
        )
        signature = SignatureVerifier(self.secret(role)).generate_signature(timestamp=str(timestamp), body=body)
        headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Slack-Request-Timestamp", str(timestamp)),
            ("X-Slack-Signature", signature),
        ]
        return Request("/hooks/slack", headers, body.encode("utf-8"))

    def extra_cases(self, check):
        genuine = self.sign("primary", fresh_id("trig_"), now())
        no_timestamp = genuine.without("X-Slack-Request-Timestamp")
        check.refused(self.name, "timestamp-header-missing", no_timestamp, "missing_signature")
        check.refused(
            self.name, "non-numeric-timestamp", self.sign("primary", fresh_id("trig_"), "soon"), "malformed_signature"
        )
        # The genuine signature in uppercase hex: the SDK's is_valid refuses it.
        genuine = self.sign("primary", fresh_id("trig_"), now())
        upper = "v0=" + genuine.header("X-Slack-Signature")[len("v0=") :].upper()
        library_refuses = not SignatureVerifier(self.secret("primary")).is_valid(
            genuine.body, genuine.header("X-Slack-Request-Timestamp"), upper
        )
        check.refused_by_library_and_gateway(
            self.name, "uppercase-hex", genuine.replacing("X-Slack-Signature", upper), library_refuses
        )


class StandardWebhooks(Scheme):
    """Standard Webhooks with webhook-* headers (the standardwebhooks library),
    or Svix with svix-* headers (the svix library)."""

    name = "standard-webhooks"
    header_prefix = "webhook"
    library = StandardWebhook
    garbage = b"v1,not-base64!"
    timestamped = True
    other_key = "standard"

    @property
    def signature_header(self):
        return f"{self.header_prefix}-signature"

    def sign(self, role, delivery_id, timestamp):
        body = json_event(delivery_id, "invoice.paid")
        p = self.header_prefix
        if isinstance(timestamp, int):
            signature = self.library(self.secret(role)).sign(
                delivery_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode("utf-8")
            )
        else:
            # The libraries take a datetime; a non-number timestamp can only
            # be signed by hand (same message layout: id.timestamp.body).
            key = base64.b64decode(self.secret(role).removeprefix("whsec_"))
            mac = hmac.new(key, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
            signature = "v1," + base64.b64encode(mac).decode()
        headers = [
            ("Content-Type", "application/json"),
            (f"{p}-id", delivery_id),
            (f"{p}-timestamp", str(timestamp)),
            (f"{p}-signature", signature),
        ]
        return Request(f"/hooks/{self.name}", headers, body)

    def extra_cases(self, check):
        # The header is a space-separated list; any v1 entry may match.
        msg_id = fresh_id("msg_")
        t = datetime.fromtimestamp(now(), tz=timezone.utc)
        body = json_event(msg_id, "invoice.paid").decode("utf-8")
        unknown = self.library(OTHER["standard"]).sign(msg_id, t, body)
        known = self.library(self.secret("rotated")).sign(msg_id, t, body)
        request = self.sign("primary", msg_id, now()).replacing(self.signature_header, f"v1a,future {unknown} {known}")
        check.accepted_then_duplicate(self.name, "signature-list-one-matches", request)
        check.refused(
            self.name, "non-numeric-timestamp", self.sign("primary", fresh_id("msg_"), "soon"), "malformed_signature"
        )


class Svix(StandardWebhooks):
    name = "svix"
    header_prefix = "svix"
    library = SvixWebhook


class Shopify(Scheme):
    name = "shopify"
    signature_header = "X-Shopify-Hmac-Sha256"
    garbage = b"not base64!"
    other_key = "shopify"

    def sign(self, role, delivery_id, timestamp):
        # No official signing library (shopify_python_api only verifies):
        # Shopify's documented HMAC, by hand.
        body = json_event(delivery_id, "orders/create")
        mac = hmac.new(self.secret(role).encode(), body, hashlib.sha256).digest()
        headers = [
            ("Content-Type", "application/json"),
            ("X-Shopify-Topic", "orders/create"),
            ("X-Shopify-Webhook-Id", delivery_id),
            ("X-Shopify-Hmac-Sha256", base64.b64encode(mac).decode()),
        ]
        return Request("/hooks/shopify", headers, body)


class Gitlab(Scheme):
    name = "gitlab"
    signature_header = "X-Gitlab-Token"
    # Not visible ASCII (the only way a token can be malformed).
    garbage = b"token-caf\xe9"
    other_key = "gitlab"

    def sign(self, role, delivery_id, timestamp):
        # GitLab sends the secret token itself; there is nothing to sign.
        body = json_event(delivery_id, "push")
        headers = [
            ("Content-Type", "application/json"),
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Event-UUID", delivery_id),
            ("X-Gitlab-Token", self.secret(role)),
        ]
        return Request("/hooks/gitlab", headers, body)


class Twilio(Scheme):
    signature_header = "X-Twilio-Signature"
    garbage = b"not base64!"
    other_key = "twilio"

    def __init__(self, name, secrets, public_url):
        super().__init__(secrets)
        self.name = name
        self.public_url = public_url
        self.path = urllib.parse.urlsplit(public_url).path

    def sign(self, role, delivery_id, timestamp, query="", signed_url=None):
        # An incoming SMS, form-encoded; the signature covers the public URL
        # (plus query) and the sorted form parameters.
        params = {
            "MessageSid": delivery_id,
            "AccountSid": "AC00000000000000000000000000000000",
            "From": "+14155550100",
            "To": "+14155550199",
            "Body": "Crosscheck: café ✓ & 100% sure?",
            "NumMedia": "0",
            "FromCity": "",
        }
        url = (signed_url or self.public_url) + (f"?{query}" if query else "")
        signature = RequestValidator(self.secret(role)).compute_signature(url, params)
        headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("I-Twilio-Idempotency-Token", delivery_id),
            ("X-Twilio-Signature", signature),
        ]
        path = self.path + (f"?{query}" if query else "")
        return Request(path, headers, urllib.parse.urlencode(params).encode())

    def sign_json(self, role, delivery_id, hash_case=str.lower):
        # JSON bodies: the URL carries bodySHA256=<hex sha256(body)> and only
        # the URL is signed.
        validator = RequestValidator(self.secret(role))
        body = json_event(delivery_id, "com.twilio.messaging.inbound-message.received").decode("utf-8")
        query = urllib.parse.urlencode({"bodySHA256": hash_case(validator.compute_hash(body))})
        signature = validator.compute_signature(f"{self.public_url}?{query}", {})
        headers = [
            ("Content-Type", "application/json"),
            ("I-Twilio-Idempotency-Token", delivery_id),
            ("X-Twilio-Signature", signature),
        ]
        return Request(f"{self.path}?{query}", headers, body.encode("utf-8"))

    def url_forms(self):
        """The configured URL with no port, the scheme's default port, its own
        port and another one: (label, URL) each."""
        parsed = urllib.parse.urlsplit(self.public_url)
        default_port = 443 if parsed.scheme == "https" else 80
        forms = []
        for port in dict.fromkeys([None, default_port, parsed.port, 8444]):
            netloc = parsed.hostname if port is None else f"{parsed.hostname}:{port}"
            forms.append((f"port-{port or 'none'}", parsed._replace(netloc=netloc).geturl()))
        return forms

    def extra_cases(self, check):
        # Twilio's backend signs the URL sometimes with, sometimes without its
        # port, so the official validate() accepts more than one form of the
        # configured URL. Each form is signed, validate() is asked whether it
        # accepts it, and the gateway must answer the same.
        for label, url in self.url_forms():
            request = self.sign("primary", fresh_id("SM"), now(), signed_url=url)
            params = dict(urllib.parse.parse_qsl(request.body.decode(), keep_blank_values=True))
            signature = request.header("X-Twilio-Signature")
            if RequestValidator(self.secret("primary")).validate(self.public_url, params, signature):
                check.accepted(self.name, f"url-signed-with-{label}-validate-accepts", request)
            else:
                check.refused(self.name, f"url-signed-with-{label}-validate-refuses", request, "invalid_signature")

        request = self.sign("primary", fresh_id("SM"), now(), query="account=crosscheck&attempt=1")
        check.accepted_then_duplicate(self.name, "form-with-query", request)
        changed = Request(request.path.replace("attempt=1", "attempt=2"), request.headers, request.body)
        check.refused(self.name, "form-query-changed", changed, "invalid_signature")
        check.accepted_then_duplicate(self.name, "json-body-sha256", self.sign_json("primary", fresh_id("SM")))
        check.accepted(self.name, "json-body-sha256-rotated", self.sign_json("rotated", fresh_id("SM")))
        genuine = self.sign_json("primary", fresh_id("SM"))
        check.refused(self.name, "json-body-tampered", genuine.with_body(tamper(genuine.body)), "invalid_signature")
        check.refused(self.name, "json-other-secret", self.sign_json("other", fresh_id("SM")), "invalid_signature")
        # The body's hash in uppercase hex, the URL signed over it: validate()
        # compares the hash exactly and refuses it.
        upper = self.sign_json("primary", fresh_id("SM"), hash_case=str.upper)
        url = self.public_url + upper.path[len(self.path) :]
        library_refuses = not RequestValidator(self.secret("primary")).validate(
            url, upper.body.decode("utf-8"), upper.header("X-Twilio-Signature")
        )
        check.refused_by_library_and_gateway(
            self.name, "json-body-sha256-uppercase", upper, library_refuses, "invalid_signature"
        )


class GenericHmac(Scheme):
    """Our `hmac` scheme as configured on a source: header, algorithm,
    encoding and prefix. No provider library: Python's hmac module."""

    def __init__(self, secrets, name, algorithm, encoding, prefix, garbage):
        super().__init__(secrets)
        self.name = name
        self.algorithm = algorithm
        self.encoding = encoding
        self.prefix = prefix
        self.garbage = garbage
        self.signature_header = "X-Signature"
        self.other_key = "hmac"

    def sign(self, role, delivery_id, timestamp):
        body = json_event(delivery_id, "build.finished")
        mac = hmac.new(self.secret(role).encode(), body, self.algorithm).digest()
        encoded = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        headers = [
            ("Content-Type", "application/json"),
            ("X-Delivery-Id", delivery_id),
            ("X-Signature", self.prefix + encoded),
        ]
        return Request(f"/hooks/{self.name}", headers, body)


def run_scheme(check: Checker, scheme: Scheme):
    name = scheme.name

    def genuine(role="primary", timestamp=None):
        return scheme.sign(role, fresh_id("cc_"), now() if timestamp is None else timestamp)

    # Every scheme here has a delivery id (Slack's is timestamp:signature),
    # so an identical resend is a duplicate.
    check.accepted_then_duplicate(name, "genuine", genuine())
    check.accepted(name, "rotated-secret", genuine("rotated"))
    if isinstance(scheme, Gitlab):
        # GitLab's token does not cover the body: a changed body cannot be
        # detected, and is accepted.
        request = genuine()
        check.accepted(name, "body-changed-accepted-token-does-not-sign-body", request.with_body(tamper(request.body)))
    else:
        request = genuine()
        check.refused(name, "body-changed", request.with_body(tamper(request.body)), "invalid_signature")
    check.refused(name, "other-secret", genuine("other"), "invalid_signature")
    check.refused(name, "header-missing", genuine().without(scheme.signature_header), "missing_signature")
    check.refused(
        name, "header-garbled", genuine().replacing(scheme.signature_header, scheme.garbage), "malformed_signature"
    )
    if scheme.timestamped:
        check.refused(name, "timestamp-10m-old", genuine(timestamp=now() - SKEW_SECONDS), "timestamp_out_of_tolerance")
        check.refused(
            name, "timestamp-10m-future", genuine(timestamp=now() + SKEW_SECONDS), "timestamp_out_of_tolerance"
        )
    scheme.extra_cases(check)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the gateway's public listener, http://127.0.0.1:PORT")
    parser.add_argument("--github-signed", required=True, help="JSON written by github.mjs")
    parser.add_argument("--twilio-public-url", required=True, help="public_url of the twilio source")
    parser.add_argument(
        "--twilio-port-public-url", required=True, help="public_url, with a non-default port, of the twilio-port source"
    )
    args = parser.parse_args()

    secrets = json.loads(os.environ["CROSSCHECK_SECRETS"])
    with open(args.github_signed, encoding="utf-8") as f:
        github = json.load(f)
    print(
        "crosscheck: libraries: "
        f"{github['library']}, stripe {stripe.VERSION}, svix {svix.__version__}, "
        f"standardwebhooks {standardwebhooks.__version__}, "
        f"slack_sdk {slack_sdk.version.__version__}, twilio {twilio.__version__}",
        flush=True,
    )

    schemes = [
        Github(secrets["github"], github["signed"], github["uppercase"]),
        Stripe(secrets["stripe"]),
        Slack(secrets["slack"]),
        Shopify(secrets["shopify"]),
        StandardWebhooks(secrets["standard-webhooks"]),
        Svix(secrets["svix"]),
        Gitlab(secrets["gitlab"]),
        Twilio("twilio", secrets["twilio"], args.twilio_public_url),
        Twilio("twilio-port", secrets["twilio-port"], args.twilio_port_public_url),
        GenericHmac(secrets["hmac"], "hmac", "sha256", "hex", "sha256=", b"sha1=" + b"0" * 40),
        GenericHmac(secrets["hmac-b64"], "hmac-b64", "sha512", "base64", "", b"not base64!"),
    ]
    report = Report()
    check = Checker(Gateway(args.base_url), report)
    for scheme in schemes:
        run_scheme(check, scheme)
    print(f"crosscheck: {report.passed} passed, {report.failed} failed", flush=True)
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
