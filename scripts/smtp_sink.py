#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) on loopback for end-to-end tests.

Accepts every message and appends each one as a JSON line to --out:
  {"mail_from": str, "rcpt_tos": [str], "data": str, "data_encoding": "utf-8"|"latin-1",
   "auth_user": str|null, "peer": "127.0.0.1:PORT", "received_at": RFC 3339 UTC,
   "port": PORT it arrived on, "tls": {"version": "TLSv1.3", "cipher": str}|null}
`data` is the raw message (headers + body, CRLF line ends, dot-unstuffed)
decoded as UTF-8, or as Latin-1 (byte for byte, lossless) when it is not valid
UTF-8; `data_encoding` says which. Lines are flushed one by one, so a reader
can poll the file.

AUTH PLAIN/LOGIN is offered without TLS and any user/password is accepted
(so a client configured with credentials works); AUTH is not required.
SMTPUTF8 and 8BITMIME are offered; no STARTTLS on --port (use tls = "none").

With --tls-port, --tls-cert and --tls-key (PEM; scripts/tls_ca.sh makes a
CA and a certificate for 127.0.0.1/localhost), a second listener on
--tls-port offers STARTTLS and requires it: MAIL before STARTTLS is refused
("530 Must issue a STARTTLS command first"), so a mail in the file with
"tls" set went over TLS, and a client that does not trust the CA never gets
to send.

Run from the e2e venv (scripts/smtp.sh does): .venv-e2e/bin/python
scripts/smtp_sink.py --out FILE [--host 127.0.0.1] [--port ${SMTP_PORT:-2525}]
  [--tls-port PORT --tls-cert PEM --tls-key PEM]
"""

import argparse
import asyncio
import datetime
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class Sink:
    count = 0  # over every listener

    def __init__(self, out, port):
        self.out = out
        self.port = port

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or b""
        try:
            data, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            data, encoding = raw.decode("latin-1"), "latin-1"
        login = getattr(session.auth_data, "login", None)  # LoginPassword after AUTH
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": data,
            "data_encoding": encoding,
            "auth_user": login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
            "peer": "%s:%s" % tuple(session.peer[:2]) if session.peer else None,
            "received_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "port": self.port,
            "tls": tls_of(session),
        }
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()
        Sink.count += 1
        return "250 OK: queued as sink-%d" % Sink.count


def tls_of(session):
    """The TLS version and cipher of a session after STARTTLS, else None."""
    info = session.ssl
    if not info:
        return None
    cipher = info.get("cipher")
    return {"version": cipher[1] if cipher else None, "cipher": cipher[0] if cipher else None}


def accept_any(server, session, envelope, mechanism, auth_data):
    # auth_data is a LoginPassword(login, password) for PLAIN and LOGIN.
    return AuthResult(success=True, handled=False, auth_data=auth_data)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON lines file, appended to")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "2525")))
    ap.add_argument("--tls-port", type=int, help="a second listener that requires STARTTLS")
    ap.add_argument("--tls-cert", help="PEM certificate (chain) for --tls-port")
    ap.add_argument("--tls-key", help="PEM key for --tls-port")
    args = ap.parse_args()
    if args.tls_port and not (args.tls_cert and args.tls_key):
        ap.error("--tls-port needs --tls-cert and --tls-key")

    out = open(args.out, "a", encoding="utf-8")
    loop = asyncio.get_running_loop()

    def factory(port, **tls):
        return SMTP(
            Sink(out, port),
            hostname="smtp-sink.test",
            ident="outage e2e smtp_sink (aiosmtpd)",
            enable_SMTPUTF8=True,
            decode_data=False,
            auth_require_tls=bool(tls),
            authenticator=accept_any,
            **tls,
        )

    servers = [await loop.create_server(lambda: factory(args.port), host=args.host, port=args.port)]
    if args.tls_port:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        servers.append(await loop.create_server(
            lambda: factory(args.tls_port, tls_context=context, require_starttls=True),
            host=args.host, port=args.tls_port))
        print(f"smtp_sink: STARTTLS required on {args.host}:{args.tls_port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"smtp_sink: listening on {args.host}:{args.port}, writing {args.out}", file=sys.stderr, flush=True)
    await stop.wait()
    for server in servers:
        server.close()
        await server.wait_closed()
    out.close()
    print(f"smtp_sink: stopped after {Sink.count} message(s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
