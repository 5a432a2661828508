"""`hh-console`: the operator console (web pages and a JSON API), configured by HH_CONFIG's
[console] section. Off unless `enabled = true`; binds 127.0.0.1:8082 unless told otherwise.

    hh-console                                serve
    hh-console hash-password NAME ROLE        a users-file line (the password read from stdin)

SIGTERM/SIGINT: stop serving and close. A failure while starting exits 1 (one line)."""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys

import structlog
from aiohttp import web

from console.app import create_app
from console.auth import ROLES, UsersError, hash_password
from shared import logs
from shared.command import settings_from_command_line
from shared.settings import Settings

log = structlog.get_logger("console")


async def serve(settings: Settings) -> int:
    try:
        app = create_app(settings)
    except UsersError as exc:
        log.error("console_start_failed", error=str(exc))
        return 2
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        await web.TCPSite(runner, settings.console.host, settings.console.port).start()
    except OSError as exc:
        log.error("console_start_failed", error=logs.error_text(exc))
        await runner.cleanup()
        return 1
    log.info("console_started", host=settings.console.host, port=settings.console.port)
    await stop.wait()
    await runner.cleanup()
    log.info("console_stopped")
    return 0


def hash_password_line(args: list[str]) -> int:
    if len(args) != 2 or args[1] not in ROLES:
        print(f"usage: hh-console hash-password NAME {'|'.join(ROLES)}", file=sys.stderr)
        return 2
    password = (getpass.getpass("password: ") if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\n"))
    if len(password) < 12:
        print("hh-console: a password of at least 12 characters, please", file=sys.stderr)
        return 2
    print(f"{args[0]}:{args[1]}:{hash_password(password)}")
    return 0


def main() -> None:
    if sys.argv[1:2] == ["hash-password"]:
        sys.exit(hash_password_line(sys.argv[2:]))
    settings = settings_from_command_line("hh-console", __doc__)
    logs.configure(settings.log_format, settings.log_level)
    console = settings.console
    if not console.enabled:
        print("hh-console: the console is off: set enabled = true in the config's [console]",
              file=sys.stderr)
        sys.exit(2)
    if not console.users_file and not console.proxy_user_header:
        print("hh-console: no operator could sign in: set [console] users_file (or "
              "proxy_user_header behind an authenticating proxy)", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
