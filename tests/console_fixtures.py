"""The console in tests: its app on loopback (TestServer) over the real store and broker, two
operators (an operator and a read-only viewer), and signed-in clients for each."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from console.app import create_app
from console.auth import hash_password
from shared.settings import ConsoleSettings, Settings

PASSWORDS = {"olga": "olga-operator-password", "victor": "victor-viewer-password"}


def write_users(folder: Path) -> Path:
    path = folder / "console-users.txt"
    path.write_text(f"# name:role:hash\nolga:operator:{hash_password(PASSWORDS['olga'])}\n"
                    f"victor:viewer:{hash_password(PASSWORDS['victor'])}\n")
    return path


def csrf_of(html: str) -> str:
    match = re.search(r'name="(?:csrf|login_csrf)" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@dataclass
class ConsoleClient:
    """One browser-like client: its own cookie jar; `csrf` once signed in."""

    url: str
    http: aiohttp.ClientSession = field(default_factory=lambda: aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True)))  # cookies for 127.0.0.1
    csrf: str = ""

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.http.get(self.url + path, allow_redirects=False, **kwargs)

    async def sign_in(self, name: str, password: str | None = None) -> aiohttp.ClientResponse:
        form = await self.get("/login")
        token = csrf_of(await form.text())
        response = await self.http.post(self.url + "/login", data={
            "login_csrf": token, "name": name, "password": password or PASSWORDS[name],
            "next": "/"}, allow_redirects=False)
        if response.status == 303:
            page = await self.get("/review")
            self.csrf = csrf_of(await page.text())
        return response

    async def post(self, path: str, **form: str) -> aiohttp.ClientResponse:
        return await self.http.post(self.url + path, data={"csrf": self.csrf, **form},
                                    allow_redirects=False)


@dataclass
class RunningConsole:
    server: TestServer
    clients: list[ConsoleClient] = field(default_factory=list)

    def client(self) -> ConsoleClient:
        made = ConsoleClient(str(self.server.make_url("")).rstrip("/"))
        self.clients.append(made)
        return made

    async def signed_in(self, name: str) -> ConsoleClient:
        made = self.client()
        assert (await made.sign_in(name)).status == 303
        return made


@pytest.fixture
async def console_app(
    make_settings: Callable[..., Settings], tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    """Start a console over `settings` (or a fresh one), with `console` settings on top."""
    running: list[RunningConsole] = []

    async def start(settings: Settings | None = None, **console: Any) -> RunningConsole:
        users = write_users(tmp_path)
        base = settings or make_settings()
        section = {"enabled": True, "users_file": str(users), "metrics_urls": (), **console}
        server = TestServer(create_app(replace(base, console=ConsoleSettings(**section))))
        await server.start_server()
        running.append(RunningConsole(server))
        return running[-1]

    yield start
    for console in running:
        for client in console.clients:
            await client.http.close()
        await console.server.close()
