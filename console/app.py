"""The console's aiohttp app: server-rendered pages (aiohttp-jinja2, no JavaScript) and a JSON
API over the same data. Every page needs a signed-in operator; every state-changing request
needs the session's CSRF token and an operator allowed to act; every answer carries the
security headers; every action is audited."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import aiohttp_jinja2
import jinja2
import structlog
from aio_pika.exceptions import AMQPError
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from console import actions
from console.auth import Operator, Session, Sessions, Users, load_users, same_token
from console.overview import COUNTED, Overview
from console.throttle import SignInThrottle
from shared import mongo
from shared.broker import Broker
from shared.metrics import export_broker_node, metrics_handler, process_registry
from shared.money import display_amount
from shared.settings import Settings
from worker import dlq, parts, story

log = structlog.get_logger("console")
HERE = Path(__file__).resolve().parent
COOKIE = "hh_console"
LOGIN_COOKIE = "hh_console_login"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # (no-referrer would make forms send Origin: null)
    "Cache-Control": "no-store",
}
OPEN_PATHS = ("/login", "/static/", "/healthz", "/readyz", "/metrics", "/favicon.ico")

SETTINGS = web.AppKey("settings", Settings)
COLLECTIONS = web.AppKey("collections", mongo.Collections)
SESSIONS = web.AppKey("sessions", Sessions)
USERS = web.AppKey("users", Users)
BROKER = web.AppKey("broker", Broker)
PARTS = web.AppKey("parts", parts.Parts)
OVERVIEW = web.AppKey("overview", Overview)
THROTTLE = web.AppKey("sign_in_throttle", SignInThrottle)
SIGN_IN_REFUSALS = web.AppKey("sign_in_refusals", Counter)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
SESSION = web.RequestKey("session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda v: json.dumps(v, default=_json_default))


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    if _is_api(request):
        return _json({"error": message}, status)
    return aiohttp_jinja2.render_template("error.html", request,
                                          {"message": message, "status": status},
                                          status=status)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects, and aiohttp's own 404 and 405
        exc.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k not in exc.headers})
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@web.middleware
async def outages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The store or the broker not answering: a page that says so (503), not a 500."""
    try:
        return await handler(request)
    except (PyMongoError, AMQPError, ConnectionError, TimeoutError) as exc:
        log.warning("console_dependency_unavailable", path=request.path,
                    error=type(exc).__name__)
        return _refuse(request, 503, "the store or the broker did not answer: try again soon")


async def _operator(request: web.Request) -> tuple[Session | None, str | None]:
    """The session of this request, and a new token to set when one was made (proxy mode)."""
    settings = request.app[SETTINGS].console
    sessions = request.app[SESSIONS]
    token = request.cookies.get(COOKIE, "")
    session = await sessions.find(token)
    if settings.proxy_user_header:
        name = request.headers.get(settings.proxy_user_header, "").strip()
        if not name:
            return None, None
        role = (request.headers.get(settings.proxy_role_header, "").strip()
                if settings.proxy_role_header else "") or "viewer"
        if role not in ("operator", "viewer"):
            role = "viewer"
        if session is None or session.operator != Operator(name, role):
            token, session = await sessions.create(Operator(name, role))
            return session, token
        return session, None
    return session, None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(OPEN_PATHS) and request.path != "/logout":
        return await handler(request)
    session, new_token = await _operator(request)
    if session is None:
        if _is_api(request):
            return _json({"error": "sign in first"}, 401)
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    request[SESSION] = session
    if request.method not in ("GET", "HEAD"):
        refused = await _check_change(request, session)
        if refused is not None:
            return refused
    response = await handler(request)
    if new_token:
        _set_cookie(request, response, COOKIE, new_token, request.app[SESSIONS].ttl_s)
    return response


async def _check_change(request: web.Request, session: Session) -> web.Response | None:
    """A state-changing request: same origin, the session's CSRF token, an operator who may
    act. Refused (and logged) otherwise, before anything is done."""
    origin = request.headers.get("Origin")
    if origin and origin != f"{request.scheme}://{request.host}":
        return _denied(request, session, "cross-origin request refused")
    given = request.headers.get("X-CSRF-Token", "")
    if not given and request.content_type == "application/x-www-form-urlencoded":
        given = str((await request.post()).get("csrf", ""))
    if not same_token(given, session.csrf):
        return _denied(request, session, "missing or wrong CSRF token")
    if request.path != "/logout" and not session.operator.may_act:
        return _denied(request, session, "read-only: your role cannot change anything", 403)
    return None


def _denied(request: web.Request, session: Session, why: str, status: int = 403
            ) -> web.Response:
    log.warning("console_refused", by=session.operator.name, path=request.path, why=why)
    return _refuse(request, status, why)


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: float) -> None:
    response.set_cookie(name, value, max_age=max(1, round(max_age)), httponly=True,
                        samesite="Strict", secure=request.secure, path="/")


def _page(template: str) -> Callable[[Callable[[web.Request], Awaitable[Any]]], Handler]:
    """A handler returning a context dict renders `template`, or JSON under /api/."""
    def wrap(handler: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        async def page(request: web.Request) -> web.StreamResponse:
            context = await handler(request)
            if isinstance(context, web.StreamResponse):
                return context
            if _is_api(request):
                return _json(context)
            session: Session = request[SESSION]
            return aiohttp_jinja2.render_template(
                template, request, {
                    "projects": sorted(request.app[SETTINGS].projects), **context,
                    "operator": session.operator, "csrf": session.csrf,
                    "done": request.query.get("done")})
        return page
    return wrap


# --- sign in and out ------------------------------------------------------------------------

async def login_form(request: web.Request) -> web.StreamResponse:
    # The form's token is the cookie's: a second load (another tab, a favicon fetch that was
    # sent here) must not invalidate a form already shown.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if len(token) < 16:
        token = secrets.token_urlsafe(16)
    response = aiohttp_jinja2.render_template(
        "login.html", request, {"login_csrf": token, "next": request.query.get("next", "/"),
                                "error": None, "operator": None})
    _set_cookie(request, response, LOGIN_COOKIE, token, 600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    next_path = str(form.get("next", "/"))
    if not next_path.startswith("/") or next_path[1:2] in ("/", "\\"):
        next_path = "/"  # never off-site (a browser reads a backslash like a slash)
    if not same_token(str(form.get("login_csrf", "")), request.cookies.get(LOGIN_COOKIE, "")):
        return _refuse(request, 403, "the sign-in form expired: load it again")
    name = str(form.get("name", ""))
    users, throttle, address = request.app[USERS], request.app[THROTTLE], request.remote or ""
    # An unknown name is not logged: it may be a password typed in the wrong field.
    logged_name = name if users.known(name) else None
    wait = throttle.wait_s(name, address, time.monotonic())
    if wait > 0:  # refused before the password is even checked
        request.app[SIGN_IN_REFUSALS].labels("throttled").inc()
        log.warning("console_sign_in_throttled", name=logged_name, source=address,
                    wait_s=math.ceil(wait))
        return _sign_in_again(request, next_path, 429, f"Too many failed sign-ins: try again "
                              f"in {math.ceil(wait)} s.", {"Retry-After": str(math.ceil(wait))})
    operator = users.check(name, str(form.get("password", "")))
    if operator is None:
        throttle.failed(name, address, time.monotonic())
        request.app[SIGN_IN_REFUSALS].labels("wrong_password").inc()
        log.warning("console_sign_in_refused", name=logged_name, name_known=users.known(name),
                    source=address)
        return _sign_in_again(request, next_path, 401, "Wrong name or password.")
    throttle.succeeded(name, address)
    token, _session = await request.app[SESSIONS].create(operator)
    log.info("console_signed_in", by=operator.name, role=operator.role)
    response = web.HTTPSeeOther(next_path)
    _set_cookie(request, response, COOKIE, token, request.app[SESSIONS].ttl_s)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


def _sign_in_again(request: web.Request, next_path: str, status: int, error: str,
                   headers: dict[str, str] | None = None) -> web.StreamResponse:
    token = secrets.token_urlsafe(16)
    response = aiohttp_jinja2.render_template(
        "login.html", request, {"login_csrf": token, "next": next_path, "operator": None,
                                "error": error}, status=status)
    response.headers.update(headers or {})
    _set_cookie(request, response, LOGIN_COOKIE, token, 600)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[SESSIONS].end(request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# --- pages ----------------------------------------------------------------------------------

@_page("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    figures = await request.app[OVERVIEW].figures()
    review = await story.needs_review(request.app[COLLECTIONS])
    return {**figures, "needs_review": len(review), "labels": COUNTED,
            "projects": sorted(request.app[SETTINGS].projects)}


@_page("find.html")
async def find(request: web.Request) -> Any:
    project, query = request.query.get("project", ""), request.query.get("q", "")
    order_id = await story.find(request.app[COLLECTIONS], project, query)
    if order_id is not None:
        project_id, _, payment_id = order_id.partition(":")
        path = f"/payments/{quote(project_id, safe='')}/{quote(payment_id, safe='')}"
        if _is_api(request):
            return {"found": order_id, "url": "/api" + path}
        raise web.HTTPSeeOther(path)
    return {"query": query, "project": project, "found": None,
            "projects": sorted(request.app[SETTINGS].projects)}


def _order_id(request: web.Request) -> str:
    return f"{request.match_info['project']}:{request.match_info['payment']}"


@_page("payment.html")
async def payment(request: web.Request) -> Any:
    found = await story.story(request.app[COLLECTIONS], _order_id(request),
                              request.app[SETTINGS].retention)
    if found is None:
        return _refuse(request, 404, f"no payment {_order_id(request)}")
    return {"story": found, "order_id": _order_id(request),
            "project_id": request.match_info["project"],
            "payment_id": request.match_info["payment"]}


async def raw_alert(request: web.Request) -> web.StreamResponse:
    body = await story.raw_alert(request.app[COLLECTIONS], _order_id(request),
                                 request.match_info["key"])
    if body is None:
        return _refuse(request, 404, "no such alert for this payment")
    if _is_api(request):
        return _json({"key": request.match_info["key"], "body": body})
    session: Session = request[SESSION]
    return aiohttp_jinja2.render_template(
        "raw.html", request, {"key": request.match_info["key"], "body": body,
                              "order_id": _order_id(request), "operator": session.operator,
                              "csrf": session.csrf})


def _list_page(title: str, kind: str,
               read: Callable[[mongo.Collections], Awaitable[Sequence[Mapping[str, Any]]]]
               ) -> Handler:
    @_page("list.html")
    async def listing(request: web.Request) -> dict[str, Any]:
        return {"title": title, "kind": kind, "rows": await read(request.app[COLLECTIONS])}
    return listing


review_list = _list_page("Needs review", "review", story.needs_review)
anomaly_list = _list_page("Anomalies", "anomalies", story.anomalies)
activity_list = _list_page("Recent activity", "activity", story.activity)


@_page("dead_letters.html")
async def dead_letters(request: web.Request) -> dict[str, Any]:
    now = time.time()
    letters = await dlq.list_letters(request.app[BROKER])
    return {"letters": [letter.summary(now) for letter in letters]}


# --- actions (operators only; CSRF-checked by the middleware) -------------------------------

async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type == "application/json":
        value = await request.json()
        return {k: str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    return {k: str(v) for k, v in (await request.post()).items()}


def _back(request: web.Request, path: str, message: str) -> web.StreamResponse:
    if _is_api(request):
        return _json({"result": message})
    raise web.HTTPSeeOther(path + "?" + urlencode({"done": message}))


async def redrive_one(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    sent = await actions.redrive(request.app[BROKER], request.app[COLLECTIONS],
                                 request[SESSION].operator, ids=[form.get("id", "")],
                                 reason_contains=None, dry_run=False)
    return _back(request, "/dead-letters", f"redriven: {len(sent)}")


async def redrive_matching(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    reason = form.get("reason_contains", "").strip()
    if not reason:
        return _refuse(request, 400, "say which dead letters: a text their reason contains")
    dry_run = form.get("confirm") != "yes"
    letters = await actions.redrive(request.app[BROKER], request.app[COLLECTIONS],
                                    request[SESSION].operator, ids=[],
                                    reason_contains=reason, dry_run=dry_run)
    if not dry_run:
        return _back(request, "/dead-letters", f"redriven: {len(letters)}")
    if _is_api(request):
        return _json({"dry_run": True, "would_redrive": len(letters)})
    session: Session = request[SESSION]
    return aiohttp_jinja2.render_template(
        "confirm.html", request, {"reason_contains": reason, "count": len(letters),
                                  "operator": session.operator, "csrf": session.csrf})


async def poll(request: web.Request) -> web.StreamResponse:
    outcome = await actions.poll_now(request.app[PARTS], _order_id(request),
                                     request[SESSION].operator)
    return _back(request, request.path.rsplit("/", 1)[0], outcome)


async def reviewed(request: web.Request) -> web.StreamResponse:
    note = (await _form(request)).get("note", "").strip()[:2000]
    done = await actions.mark_reviewed(request.app[COLLECTIONS], _order_id(request),
                                       request[SESSION].operator, note)
    return _back(request, request.path.rsplit("/", 1)[0],
                 "marked reviewed" if done else "it was not waiting for review")


async def healthz(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if BROKER in request.app and request.app[BROKER].ready:
        return _json({"status": "ready"})
    return _json({"status": "broker unavailable"}, 503)


# --- the app --------------------------------------------------------------------------------

async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client: AsyncMongoClient[mongo.Document] = mongo.client(settings.mongo)
    collections = mongo.Collections.of(client[settings.mongo.database])
    app[COLLECTIONS] = collections
    app[SESSIONS] = Sessions(collections.sessions, settings.console.session_ttl_s)
    broker = Broker.for_settings(settings)
    export_broker_node(app[METRICS_REGISTRY], broker)
    await broker.connect_forever()
    app[BROKER] = broker
    http = aiohttp.ClientSession()
    app[PARTS] = parts.build(settings, client, broker, http)
    overview_ = Overview(settings.console.metrics_urls, broker)
    app[OVERVIEW] = overview_
    sampling = asyncio.create_task(overview_.run())
    yield
    sampling.cancel()
    await overview_.close()
    await http.close()
    await broker.close()
    await client.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[security_headers, outages, authenticate],
                          client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[USERS] = Users(load_users(settings.console.users_file))
    app[THROTTLE] = SignInThrottle()
    registry = app[METRICS_REGISTRY] = process_registry()
    app[SIGN_IN_REFUSALS] = Counter("hh_console_sign_ins_refused", "Sign-ins refused, by reason",
                                    ["reason"], registry=registry)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=jinja2.select_autoescape(default=True))
    env = aiohttp_jinja2.get_env(app)
    env.filters["when"] = _when
    env.filters["money"] = display_amount  # minor units as stored, shown in currency units
    env.filters["qs"] = lambda value: quote(str(value), safe="")
    app.cleanup_ctx.append(_services)
    app.router.add_static("/static/", HERE / "static")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    for prefix in ("", "/api"):
        app.router.add_get(prefix + "/" if prefix == "" else prefix + "/overview", overview)
        app.router.add_get(prefix + "/find", find)
        app.router.add_get(prefix + "/payments/{project}/{payment}", payment)
        app.router.add_get(prefix + "/payments/{project}/{payment}/alerts/{key}", raw_alert)
        app.router.add_post(prefix + "/payments/{project}/{payment}/poll", poll)
        app.router.add_post(prefix + "/payments/{project}/{payment}/reviewed", reviewed)
        app.router.add_get(prefix + "/review", review_list)
        app.router.add_get(prefix + "/anomalies", anomaly_list)
        app.router.add_get(prefix + "/activity", activity_list)
        app.router.add_get(prefix + "/dead-letters", dead_letters)
        app.router.add_post(prefix + "/dead-letters/redrive", redrive_one)
        app.router.add_post(prefix + "/dead-letters/redrive-matching", redrive_matching)
    return app


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)
