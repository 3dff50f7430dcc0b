"""A real SMTP server for the mail tests (aiosmtpd), on loopback.

    server.py --spool DIR [--user U --password P]

Prints `PORT <n>` once it listens on an ephemeral port. Every accepted message is written
to DIR as <n>.eml (the bytes as received) with <n>.json beside it (envelope sender and
recipients), the .json last, so a reader that sees it sees the whole message. Every DATA,
accepted or not, adds a line to DIR/attempts.

With --user, clients must log in (AUTH PLAIN or LOGIN, allowed without TLS: loopback).
What the server answers is steered by DIR/control, read at every MAIL, RCPT and DATA:
empty or missing: accept; `451` / `421` / `550` (any 3-digit code): answer DATA with it
(421 also closes the connection); `hang`: say nothing for a minute.
"""

import argparse
import asyncio
import json
import os
import socket
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def control(spool):
    try:
        with open(os.path.join(spool, "control")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


class Handler:
    def __init__(self, spool):
        self.spool = spool
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(self.spool, "attempts"), "a") as f:
            f.write("data\n")
        mode = control(self.spool)
        if mode == "hang":
            await asyncio.sleep(60)
        if len(mode) == 3 and mode.isdigit():
            if mode == "421":
                return "421 4.3.2 Service shutting down"
            return f"{mode} {mode[0]}.0.0 Rejected by the test server"
        self.count += 1
        base = os.path.join(self.spool, str(self.count))
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(base + ".json.tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Queued as " + str(self.count)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user and auth_data.password.decode() == args.password
        return AuthResult(success=ok)

    kwargs = {}
    if args.user:
        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(Handler(args.spool), hostname="127.0.0.1", port=port, decode_data=False, **kwargs)
    controller.start()
    print(f"PORT {port}", flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin (or dies)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
