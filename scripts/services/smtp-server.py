"""A recording SMTP server for the mail tests, started by scripts/services/smtp.

Runs with Debian's /usr/bin/python3 and python3-aiosmtpd (1.4.3). Two listeners on 127.0.0.1:
  CARAFE_SMTP_PORT (2526)        STARTTLS required, then AUTH required
  CARAFE_SMTP_PLAIN_PORT (2527)  no TLS, AUTH required (allowed in clear on loopback)
Credentials: carafe / carafe-smtp-pass. Each accepted message is appended as one JSON line to
CARAFE_SMTP_RECORD. The recipient's local part injects failures (see reply_for_rcpt).

Usage: /usr/bin/python3 smtp-server.py <state dir holding cert.pem, key.pem>
"""

import json
import logging
import os
import re
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = b"carafe", b"carafe-smtp-pass"

state = sys.argv[1]
tls_port = int(os.environ.get("CARAFE_SMTP_PORT", "2526"))
plain_port = int(os.environ.get("CARAFE_SMTP_PLAIN_PORT", "2527"))
record_path = os.environ.get("CARAFE_SMTP_RECORD", os.path.join(state, "record.jsonl"))

# aiosmtpd warns on every connection (AUTH without TLS, its own deprecated login_data).
logging.getLogger("mail.log").setLevel(logging.ERROR)

# Each Controller runs its own event loop thread: shared state is guarded by this lock.
lock = threading.Lock()
flaky_seen = {}  # address -> times RCPT was seen, for flaky-K@


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (USER, PASSWORD):
        return AuthResult(success=True, auth_data=auth_data.login.decode())
    # handled=False makes aiosmtpd answer 535 5.7.8 (with the default handled=True, it answers
    # nothing and the client hangs).
    return AuthResult(success=False, handled=False)


def local_part(address):
    return address.rsplit("@", 1)[0].lower()


def reply_for_rcpt(address):
    """The RCPT failure injected by the recipient's local part, or None to accept."""
    local = local_part(address)
    if local == "temp-fail":
        return "451 4.3.0 Try again later"
    if local == "throttle":
        return "454 4.7.0 Throttling: rate exceeded"
    if local == "perm-fail":
        return "550 5.1.1 No such user"
    m = re.fullmatch(r"retry-after-(\d+)", local)
    if m:
        return f"451 4.3.0 Try again in {m.group(1)} seconds"
    m = re.fullmatch(r"flaky-(\d+)", local)
    if m:
        with lock:
            seen = flaky_seen.get(address, 0)
            flaky_seen[address] = seen + 1
        if seen < int(m.group(1)):
            return "451 4.3.0 Try again later"
    return None


class Handler:
    def __init__(self, port):
        self.port = port

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = reply_for_rcpt(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(local_part(a) == "data-temp" for a in envelope.rcpt_tos):
            return "452 4.3.1 Insufficient system storage"
        line = json.dumps({
            "port": self.port,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": session.ssl is not None,
            "auth_user": session.auth_data,
            "data": envelope.content.decode("utf-8", errors="replace"),
            "received_at": time.time(),
        })
        # One write of a whole line, closed (so flushed) before the 250 goes out.
        with lock, open(record_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return "250 OK"


def main():
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(os.path.join(state, "cert.pem"), os.path.join(state, "key.pem"))
    common = dict(
        hostname="127.0.0.1",
        server_hostname="localhost",  # for the greeting; the default looks up the FQDN
        authenticator=authenticator,
        auth_required=True,
        data_size_limit=10 * 1024 * 1024,
        enable_SMTPUTF8=True,
        decode_data=False,
    )
    controllers = [
        Controller(Handler(tls_port), port=tls_port, tls_context=tls,
                   require_starttls=True, auth_require_tls=True, **common),
        Controller(Handler(plain_port), port=plain_port, auth_require_tls=False, **common),
    ]
    for c in controllers:
        c.start()
    print(f"listening on 127.0.0.1:{tls_port} (STARTTLS) and 127.0.0.1:{plain_port} (plain); "
          f"recording to {record_path}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
