"""Ceiling (a): an aiohttp POST handler that reads the body and answers, nothing else.
`python -m bench.noop PORT`"""

from __future__ import annotations

import sys

from aiohttp import web

from shared.wire import CALLBACK_PATHS


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"status": "accepted"})


def main() -> None:
    app = web.Application()
    app.router.add_post(CALLBACK_PATHS["success"], accept)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


async def ready(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


if __name__ == "__main__":
    main()
