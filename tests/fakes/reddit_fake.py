"""A loopback HTTP server that answers Reddit-API-shaped JSON for praw (`oauth_url`/`reddit_url` point at it).

Its content is built at run time from the mirror's Pushshift samples (no dataset text in the repository):
r/AskMen submissions carry comment trees taken from RC_2005-12 (re-linked to them), and every second reply is
re-attributed to the submission's author so that OP turns exist. Knobs: page size, a per-request delay (to kill a
crawl mid-way), x-ratelimit headers that run out after N answers, top-level comments shown before a `more`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import zstandard

SUBREDDIT = "AskMen"


def build_site(mirror: Path, n_submissions: int = 12) -> dict[str, Any]:
    """{"subs": [t3 data newest first], "comments": {sub id: [t1 data in tree order]}} from the mirror samples."""
    def lines(name: str) -> list[dict]:
        with open(mirror / "pushshift-samples" / name, "rb") as fh:
            data = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(fh).read()
        return [orjson.loads(x) for x in data.splitlines() if x.strip()]

    subs_raw, coms_raw = lines("AskMen_submissions.zst"), lines("RC_2005-12.zst")
    alive = [s for s in subs_raw if s["author"] != "[deleted]" and s.get("selftext") not in ("[removed]", "[deleted]")]
    dead = next(s for s in subs_raw if s["author"] == "[deleted]")
    chosen = alive[: n_submissions - 1] + [dead]
    groups: dict[str, list[dict]] = defaultdict(list)
    for c in coms_raw:
        groups[c["link_id"]].append(c)
    big = sorted(groups.values(), key=lambda g: (-len(g), g[0]["link_id"]))[: len(chosen)]
    subs, comments = [], {}
    base = 1_700_000_000
    for i, (s, group) in enumerate(zip(chosen, big, strict=True)):
        sid = s["id"]
        created = base + i * 3600
        subs.append({"id": sid, "name": f"t3_{sid}", "title": s["title"], "selftext": s.get("selftext", ""),
                     "author": s["author"], "created_utc": float(created), "subreddit": SUBREDDIT,
                     "num_comments": len(group), "permalink": f"/r/{SUBREDDIT}/comments/{sid}/x/", "url": "",
                     "is_self": True})
        out = []
        for k, c in enumerate(group):
            parent = c["parent_id"] if c["parent_id"].startswith("t1_") else f"t3_{sid}"
            author = s["author"] if parent.startswith("t1_") and k % 2 else c["author"]
            out.append({"id": c["id"], "name": f"t1_{c['id']}", "link_id": f"t3_{sid}", "parent_id": parent,
                        "author": author, "body": c["body"], "created_utc": float(created + 60 * (k + 1)),
                        "subreddit": SUBREDDIT})
        comments[sid] = out
    subs.sort(key=lambda x: -x["created_utc"])
    return {"subs": subs, "comments": comments}


class FakeReddit:
    """Run with `with FakeReddit(site) as fake: fake.url`."""

    def __init__(self, site: dict[str, Any], page_size: int = 5, delay_s: float = 0.0, top_shown: int = 3,
                 ratelimit_exhaust_after: int | None = None, fail_first: int = 0):
        self.site, self.page_size, self.delay_s, self.top_shown = site, page_size, delay_s, top_shown
        self.exhaust_after, self.fail_first = ratelimit_exhaust_after, fail_first
        self.log: list[tuple[float, str, str]] = []
        self._count = itertools.count(1)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeReddit:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -------------------------------------------------------------------------------------------- answers
    def listing(self, query: dict[str, list[str]]) -> dict:
        subs = self.site["subs"]
        start = 0
        if query.get("after"):
            ids = [s["name"] for s in subs]
            start = ids.index(query["after"][0]) + 1
        limit = min(int(query.get("limit", ["25"])[0]), self.page_size)
        page = subs[start:start + limit]
        after = page[-1]["name"] if start + limit < len(subs) and page else None
        return {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": s} for s in page], "after": after,
                                            "before": None, "dist": len(page)}}

    def _tree(self, sid: str) -> tuple[list[dict], list[str]]:
        coms = self.site["comments"][sid]
        kids: dict[str, list[dict]] = defaultdict(list)
        for c in coms:
            kids[c["parent_id"]].append(c)

        def node(c: dict) -> dict:
            reps = [node(k) for k in kids[c["name"]]]
            data = {**c, "replies": {"kind": "Listing", "data": {"children": reps, "after": None}} if reps else ""}
            return {"kind": "t1", "data": data}

        top = kids[f"t3_{sid}"]
        shown = [node(c) for c in top[: self.top_shown]]
        hidden = [c["id"] for c in top[self.top_shown:]]
        if hidden:
            shown.append({"kind": "more", "data": {"count": len(hidden), "name": f"t1_{hidden[0]}", "id": hidden[0],
                                                   "parent_id": f"t3_{sid}", "depth": 0, "children": hidden}})
        return shown, hidden

    def submission(self, sid: str) -> list:
        s = next(x for x in self.site["subs"] if x["id"] == sid)
        tree, _ = self._tree(sid)
        return [{"kind": "Listing", "data": {"children": [{"kind": "t3", "data": s}], "after": None}},
                {"kind": "Listing", "data": {"children": tree, "after": None}}]

    def morechildren(self, form: dict[str, list[str]]) -> dict:
        sid = form["link_id"][0][3:]
        wanted = form["children"][0].split(",")
        coms = self.site["comments"][sid]
        kids: dict[str, list[dict]] = defaultdict(list)
        for c in coms:
            kids[c["parent_id"]].append(c)
        by_id = {c["id"]: c for c in coms}
        things: list[dict] = []

        def walk(c: dict) -> None:  # parents before replies, each flat (praw re-nests them by parent_id)
            things.append({"kind": "t1", "data": {**c, "replies": ""}})
            for k in kids[c["name"]]:
                walk(k)

        for w in wanted:
            walk(by_id[w])
        return {"json": {"errors": [], "data": {"things": things}}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: Any) -> None:
                n = next(fake._count)
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                exhausted = fake.exhaust_after is not None and n == fake.exhaust_after
                self.send_header("x-ratelimit-remaining", "0" if exhausted else "599")
                # used=0 with quota left: prawcore does not pace; remaining=0: it must wait `reset` seconds.
                self.send_header("x-ratelimit-used", "600" if exhausted else "0")
                self.send_header("x-ratelimit-reset", "1" if exhausted else "600")
                self.end_headers()
                self.wfile.write(raw)

            def _route(self, method: str) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode()) if length else {}
                with fake._lock:
                    fake.log.append((time.monotonic(), method, url.path))
                    failing = fake.fail_first > 0 and url.path != "/api/v1/access_token"
                    if failing:
                        fake.fail_first -= 1
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                path = url.path.rstrip("/")
                if path == "/api/v1/access_token":
                    return self._send(200, {"access_token": "fake", "token_type": "bearer", "expires_in": 3600,
                                            "scope": "*"})
                if failing:
                    return self._send(503, {"message": "unavailable"})
                if path == f"/r/{SUBREDDIT}/new":
                    return self._send(200, fake.listing(query))
                if path.startswith("/comments/"):
                    return self._send(200, fake.submission(path.split("/")[2]))
                if path == "/api/morechildren":
                    return self._send(200, fake.morechildren({**query, **form}))
                return self._send(404, {"message": f"no fake for {method} {url.path}"})

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

        return H


def env_for(fake: FakeReddit) -> dict[str, str]:
    """Environment that points `esvr crawl live` (praw) at the fake, with dummy credentials."""
    return {"REDDIT_CLIENT_ID": "dummy-id", "REDDIT_CLIENT_SECRET": "dummy-secret",
            "ESVR_REDDIT_OAUTH_URL": fake.url, "ESVR_REDDIT_URL": fake.url, "PRAW_ALLOW_ENDPOINT_OVERRIDE": "1"}
