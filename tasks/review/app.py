"""`esvr review serve`: the pairwise review page (FastAPI + Jinja2; endpoints and formats in docs/review.md).

A rater opens the link `esvr review invite` printed (`/?token=…`): the token goes into an HttpOnly, SameSite=Strict
cookie and the browser is sent on to `/pair`, which shows the rater's next unjudged pair: two dialogues side by side,
a/b placed left/right by the rater's own salt, variant names never on the page (not even in the form: the pair is
named by a per-rater handle). A verdict is a POST of left/right/tie per criterion plus a comment; the server maps
left/right back to a/b. Post/redirect/get: reloading after a vote shows the next pair and never re-sends the vote.

Every dialogue text is rendered by Jinja2 with autoescaping (texts come from LLMs and Reddit), and the
Content-Security-Policy allows no script at all, so even a missed escape could not run one. Seeker turns the crisis
guard flags are marked on the page (the same guard as `esvr chat`), and the footer lists crisis lines for raters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

# Request at module level: FastAPI resolves handler annotations in module globals (postponed annotations).
from fastapi import Request

from tasks.chat.guard import Guard
from tasks.common.config import ReviewParams
from tasks.review.db import Rater, ReviewDB, ReviewDBError
from tasks.review.pairs import CHOICES, CRITERIA, CRITERION_KEYS

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "esvr_rater"
CHOICE_LABELS = {"left": "Left", "right": "Right", "tie": "Tie"}
CARE_NOTE = ("These conversations can be heavy to read. If anything in them weighs on you, these lines are there "
             "for you too:")
SECURITY_HEADERS = {
    # no script may run on these pages; styles only from this server; forms post only here
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'none'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the invite link carries the token: never send it on
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def handle(rater: Rater, pair_id: str) -> str:
    """The pair's name on this rater's page (pair ids may spell out the variants: the page never shows them)."""
    return rater.mac(f"pair:{pair_id}").hex()[:24]


def create_app(db: ReviewDB, cfg: ReviewParams, guard: Guard) -> Any:
    import jinja2
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.concurrency import run_in_threadpool

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined)  # every {{ }} is HTML-escaped; typos fail loudly
    css = (HERE / "review.css").read_text(encoding="utf-8")
    safe = guard.safe_message()
    app = FastAPI(title="esvr review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def page(name: str, code: int = 200, **ctx: Any) -> Any:
        html = env.get_template(name).render(safe=safe, care_note=CARE_NOTE, **ctx)
        return HTMLResponse(html, status_code=code)

    def forbidden(message: str = "This page needs the link from your invitation (a valid rater token).") -> Any:
        return page("error.html", 403, status="403 Forbidden", message=message)

    def rater_of(request: Request, allow_query: bool = False) -> Rater | None:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        if allow_query and request.query_params.get("token") is not None:
            token = request.query_params.get("token")
        return db.rater(token)

    def pair_view(rater: Rater, pair: dict[str, Any]) -> dict[str, Any]:
        a, b = pair["a"], pair["b"]
        left, right = (a, b) if rater.a_left(pair["pair_id"]) else (b, a)

        def turns(d: dict[str, Any]) -> list[dict[str, Any]]:
            return [{**t, "crisis": t["role"] == "seeker" and guard.check(t["text"]).crisis} for t in d["turns"]]

        return {"handle": handle(rater, pair["pair_id"]), "context": pair.get("context"),
                "sides": [{"id": "left", "title": "Left", "turns": turns(left)},
                          {"id": "right", "title": "Right", "turns": turns(right)}]}

    def pair_id_of(rater: Rater, h: str) -> str | None:
        return next((p for p in db.pair_ids() if handle(rater, p) == h), None)

    # ------------------------------------------------------------------------------------------ pages
    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/static/review.css")
    def stylesheet() -> Any:
        return Response(css, media_type="text/css")

    @app.get("/")
    def login(request: Request) -> Any:
        """The invite link: a valid token becomes the session cookie, then on to the first pair."""
        rater = rater_of(request, allow_query=True)
        if rater is None:
            return forbidden()
        response = RedirectResponse("/pair", status_code=303)
        token = request.query_params.get("token")
        if token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/pair")
    def next_pair(request: Request) -> Any:
        rater = rater_of(request)
        if rater is None:
            return forbidden()
        pair, done, total = db.next_pair(rater)
        flash = {"saved": "Saved. Thank you.", "duplicate": "You had already judged that pair; your first verdict "
                 "stands."}.get(request.query_params.get("status", ""))
        if pair is None:
            return page("done.html", done=done, total=total, flash=flash)
        return page("pair.html", done=done, total=total, flash=flash, csrf=rater.csrf, criteria=CRITERIA,
                    choices=CHOICES, choice_labels=CHOICE_LABELS, max_comment=cfg.max_comment_chars,
                    **pair_view(rater, pair))

    @app.post("/verdict")
    async def verdict_form(request: Request) -> Any:
        rater = await run_in_threadpool(rater_of, request)
        if rater is None:
            return forbidden()
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("csrf") != rater.csrf:
            return forbidden("This form was not sent from your review page; reload the page and try again.")
        pid = await run_in_threadpool(pair_id_of, rater, form.get("pair", ""))
        if pid is None:
            return page("error.html", 404, status="404 Not Found", message="That pair is not in this review.")
        try:
            new = await run_in_threadpool(db.record, rater, pid, {k: form.get(k, "") for k in CRITERION_KEYS},
                                          form.get("comment", "")[: cfg.max_comment_chars])
        except ValueError as e:
            return page("error.html", 400, status="400 Bad Request", message=f"Incomplete verdict: {e}.")
        return RedirectResponse(f"/pair?status={'saved' if new else 'duplicate'}", status_code=303)

    # ------------------------------------------------------------------------------------------ JSON API
    @app.get("/api/next")
    def api_next(request: Request) -> Any:
        rater = rater_of(request)
        if rater is None:
            return JSONResponse({"error": "missing or unknown rater token"}, status_code=403)
        pair, done, total = db.next_pair(rater)
        if pair is None:
            return {"done": done, "total": total, "pair": None}
        view = pair_view(rater, pair)
        return {"done": done, "total": total, "pair": view["handle"], "context": view["context"],
                **{s["id"]: [{"role": t["role"], "text": t["text"]} for t in s["turns"]] for s in view["sides"]}}

    @app.post("/api/verdicts")
    async def api_verdict(request: Request) -> Any:
        rater = await run_in_threadpool(rater_of, request)
        if rater is None:
            return JSONResponse({"error": "missing or unknown rater token"}, status_code=403)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return JSONResponse({"error": f"invalid JSON: {e}"}, status_code=400)
        pid = body.get("pair_id")
        if pid is None and isinstance(body.get("pair"), str):
            pid = await run_in_threadpool(pair_id_of, rater, body["pair"])
            if pid is None:
                return JSONResponse({"error": "unknown pair handle"}, status_code=404)
        if pid is None:
            return JSONResponse({"error": "give pair_id (or the pair handle from /api/next as pair)"},
                                status_code=400)
        comment = body.get("comment", "")
        if not isinstance(comment, str):
            return JSONResponse({"error": "comment must be a string"}, status_code=400)
        try:
            choices = {k: str(body.get(k) or "") for k in CRITERION_KEYS}
            new = await run_in_threadpool(db.record, rater, str(pid), choices, comment[: cfg.max_comment_chars])
        except ReviewDBError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"recorded": new, "duplicate": not new}, status_code=201 if new else 200)

    return app


def serve(db: ReviewDB, cfg: ReviewParams, guard: Guard, host: str, port: int) -> None:
    """Run the page until interrupted (uvicorn, one process; SQLite serialises the writes)."""
    import uvicorn

    db.set_meta("base_url", f"http://{host}:{port}")
    log.info("review page on http://%s:%d (invite raters with `esvr review invite --db %s`)", host, port, db.path)
    uvicorn.run(create_app(db, cfg, guard), host=host, port=port, log_level="warning")
