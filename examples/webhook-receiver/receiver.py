#!/usr/bin/env python3
"""A Lethe webhook receiver in Python, standard library only.

It stands for an in-house system that is not written in Go: it keeps its
customers in an SQLite file, keyed by the tenant's pseudonymous subject id,
and answers Lethe's events that lethe-connect delivers to it (answer mode
WEBHOOK). For each request it

  1. verifies the Standard Webhooks signature (webhook-id, webhook-timestamp,
     webhook-signature: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"),
     accepting any of the space-separated signatures, so a secret rotation
     needs no coordination;
  2. refuses a timestamp more than five minutes from its clock (a replayed
     request);
  3. answers a webhook-id it has answered before with the same outcome,
     without acting again (deliveries repeat after a lost answer);
  4. erases the subject for erasure.requested and answers
     {"outcome": "ERASED"}, or {"outcome": "NOT_FOUND"} when it holds none.
     Its rows are keyed by the subject id the event carries; when the event
     offers the claim check (letheclaimurl, letheclaimtoken), it also asks
     Lethe for the subject's e-mail address and erases rows filed under it.

With --callback it answers later, as a system whose work takes hours would:
it answers 202 Accepted at once, does the work in the background, and POSTs
the outcome to the event's lethecallbackurl, signed the same way (webhook-id
is the event id), until lethe-connect answers 200 or 404.

Run it (the secret is the whsec_ string lethe-connect signs with, from
<secrets>/<tenant>/<system>/signing-secret):

    python3 receiver.py --db customers.db --secret-file signing-secret --port 8088
    python3 receiver.py --db customers.db --add subject-42=ada@example.com

It listens on 127.0.0.1 in plain HTTP: lethe dev allows http:// webhooks to
loopback. In production put it behind TLS (Lethe delivers only to https).
"""

import argparse
import base64
import urllib.error
import urllib.request
import hashlib
import hmac
import json
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60
MAX_BODY = 1 << 20
SECRET_PREFIX = "whsec_"


def read_secrets(path):
    """Returns the keys of the secret file, and of path + '.previous' if any."""
    keys = []
    for p in (path, path + ".previous"):
        try:
            with open(p, encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            if p == path:
                raise
            continue
        if not text.startswith(SECRET_PREFIX):
            raise ValueError("%s: a signing secret starts with %s" % (p, SECRET_PREFIX))
        keys.append(base64.b64decode(text[len(SECRET_PREFIX):], validate=True))
    return keys


def verify(keys, headers, body, now):
    """Returns None when the request is authentic and fresh, else why not."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts = int(timestamp)
    except ValueError:
        return "webhook-timestamp is not a number"
    if abs(now - ts) > TOLERANCE_SECONDS:
        return "webhook-timestamp is more than five minutes from now: refused as a replay"
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for sig in signatures.split(" "):
            version, _, value = sig.partition(",")
            if version != "v1":
                continue
            try:
                got = base64.b64decode(value, validate=True)
            except ValueError:
                continue
            if hmac.compare_digest(expected, got):
                return None
    return "no signature matches"


def sign(key, msg_id, timestamp, body):
    """The webhook-signature header of a message, as Standard Webhooks says."""
    mac = hmac.new(key, ("%s.%d." % (msg_id, timestamp)).encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def call_back(store, secret_file, webhook_id, event):
    """Acts on the event, then POSTs the outcome to its callback URL,
    signed with the current secret; tries again a few times on failure."""
    answer = store.answer(webhook_id, event).encode()
    for attempt in range(5):
        if attempt:
            time.sleep(2 ** attempt)
        now = int(time.time())
        req = urllib.request.Request(event["lethecallbackurl"], data=answer, method="POST", headers={
            "Content-Type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(now),
            "webhook-signature": sign(read_secrets(secret_file)[0], webhook_id, now, answer)})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, reply = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, reply = e.code, e.read().decode()
        except OSError as e:
            status, reply = 0, str(e)
        sys.stdout.write("called back %s %d %s\n" % (webhook_id, status, reply.strip()))
        sys.stdout.flush()
        if status in (200, 404):  # recorded, or nothing waits for it: done either way
            return


def claim_emails(event):
    """Asks Lethe's claim check for the subject's e-mail addresses, if the
    event offers it. The token is good for this event only, for minutes."""
    url, token = event.get("letheclaimurl"), event.get("letheclaimtoken")
    if not url or not token:
        return []
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as resp:  # an error fails the delivery: Lethe retries
        claim = json.load(resp)
    return [i["value"] for i in claim.get("identifiers", []) if i.get("type") == "IDENTIFIER_TYPE_EMAIL"]


class Store:
    """The receiver's SQLite file: customers, and the answers given."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.db.execute("CREATE TABLE IF NOT EXISTS customers (subject_id TEXT PRIMARY KEY, email TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (webhook_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, answered_at INTEGER NOT NULL)")

    def add(self, subject_id, email):
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO customers VALUES (?, ?)", (subject_id, email))

    def answer(self, webhook_id, event):
        """Acts on the event once and returns its outcome, as JSON text."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute("SELECT outcome FROM answers WHERE webhook_id = ?", (webhook_id,)).fetchone()
                if row:
                    self.db.execute("COMMIT")
                    return row[0]
                outcome = self.act(event)
                self.db.execute("INSERT INTO answers VALUES (?, ?, ?)", (webhook_id, outcome, int(time.time())))
                self.db.execute("COMMIT")
                return outcome
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def act(self, event):
        kind = event.get("lethekind", "")
        subject = event.get("data", {}).get("subjectId", "")
        if kind == "erasure.requested":
            emails = claim_emails(event)
            n = self.db.execute("DELETE FROM customers WHERE subject_id = ?", (subject,)).rowcount
            for email in emails:
                n += self.db.execute("DELETE FROM customers WHERE lower(email) = lower(?)", (email,)).rowcount
            return json.dumps({"outcome": "ERASED" if n else "NOT_FOUND"})
        if kind in ("rectification.requested", "access.requested"):
            return json.dumps({"outcome": "NOT_FOUND"})
        return json.dumps({"outcome": "NOT_APPLICABLE", "reason": "the receiver keeps no consent-dependent processing"})


def make_handler(store, secret_file, fail, callback):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self.reply(413, {"error": "body too large"})
            body = self.rfile.read(length)
            try:
                keys = read_secrets(secret_file)  # re-read: a rotation needs no restart
            except (OSError, ValueError) as e:
                return self.reply(500, {"error": "no signing secret: %s" % e})
            why = verify(keys, self.headers, body, int(time.time()))
            if why:
                return self.reply(401, {"error": why})
            if fail:
                return self.reply(500, {"error": "this receiver is set to fail"})
            try:
                event = json.loads(body)
            except ValueError:
                return self.reply(400, {"error": "not JSON"})
            if callback and event.get("lethecallbackurl"):
                threading.Thread(target=call_back, args=(store, secret_file, self.headers["webhook-id"], event), daemon=True).start()
                return self.reply(202, {"accepted": True})
            try:
                answer = store.answer(self.headers["webhook-id"], event)
            except OSError as e:  # the claim check did not answer: Lethe retries
                return self.reply(503, {"error": "claim check: %s" % e})
            sys.stdout.write("answered %s %s\n" % (self.headers["webhook-id"], answer))
            sys.stdout.flush()
            return self.reply(200, json.loads(answer))

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # keep stdout for answers
            sys.stderr.write("%s\n" % (fmt % args))

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, help="the SQLite file")
    p.add_argument("--secret-file", help="the whsec_ signing secret (signing-secret.previous beside it is accepted too)")
    p.add_argument("--port", type=int, default=8088, help="port on 127.0.0.1; 0 for any")
    p.add_argument("--add", metavar="SUBJECT=EMAIL", action="append", default=[], help="add a customer and exit")
    p.add_argument("--fail", action="store_true", help="answer every authentic request 500 (to try Lethe's retries)")
    p.add_argument("--callback", action="store_true", help="answer 202 and send the outcome later to the event's lethecallbackurl")
    args = p.parse_args()
    store = Store(args.db)
    if args.add:
        for item in args.add:
            subject, _, email = item.partition("=")
            store.add(subject, email)
        return
    if not args.secret_file:
        p.error("--secret-file is required to serve")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(store, args.secret_file, args.fail, args.callback))
    sys.stdout.write("listening on 127.0.0.1:%d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
