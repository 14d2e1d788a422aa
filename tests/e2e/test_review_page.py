"""The review page as raters use it: `esvr review serve` in its own process, a real headless Chromium (Debian's
chromium + chromium-driver through selenium) logging in with an invite link, voting, reloading, voting again; the
results command; hostile markup rendered as text; 403 for wrong or missing tokens; 50 raters submitting at once with
no verdict lost or counted twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tasks.common import paths
from tasks.llm.client import free_port, wait_healthy

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "review" / "pairs.jsonl"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def esvr(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks.cli.main", *args], cwd=paths.ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


class ReviewServer:
    def __init__(self, tmp: Path, pairs: Path):
        self.db = tmp / "review.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "tasks.cli.main", "review", "serve", "--pairs",
                                      str(pairs), "--db", str(self.db), "--port", str(self.port)],
                                     cwd=paths.ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        wait_healthy(self.url + "/health", 180, self.proc)  # a fresh interpreter importing the app on a loaded box

    def invite(self, name: str = "rater") -> str:
        out = esvr("review", "invite", "--db", str(self.db), "--name", name)
        assert out.returncode == 0, out.stderr
        link = out.stdout.strip()
        assert link.startswith(self.url + "/?token="), link
        return link

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


@pytest.fixture
def server(tmp_path):
    s = ReviewServer(tmp_path, FIXTURE)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} / {DRIVER} missing: .ci/run installs Debian's chromium and chromium-driver")
        pytest.skip(f"{CHROMIUM} / {DRIVER} not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in BROWSER_FLAGS:
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def vote(driver, choices: dict[str, str], comment: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    for criterion, choice in choices.items():
        driver.find_element(By.CSS_SELECTOR, f"#{criterion} input[value='{choice}']").click()
    driver.find_element(By.ID, "comment").send_keys(comment)
    submit = driver.find_element(By.ID, "submit")
    submit.click()
    # The click returns once the POST is sent, not once the redirected page is there: on a loaded machine the next
    # find_element could still read the old page. Wait until the old form is gone.
    WebDriverWait(driver, 120).until(expected_conditions.staleness_of(submit))


def count_verdicts(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])


def test_log_in_vote_reload_vote_again_results(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(server.invite("alice"))
    assert browser.current_url == server.url + "/pair"  # the token left the address bar
    assert browser.find_element(By.ID, "progress").text == "Pair 1 of 4"
    html = browser.page_source
    for hidden in ("esvr", "baseline", "variant", "p1", "p2", "p3", "p4-markup"):
        assert not re.search(rf"\b{re.escape(hidden)}\b", html.replace("esvr review", "")), hidden
    left = browser.find_element(By.ID, "left").text
    vote(browser, {"validating_challenges": "left", "positive_aspects": "left", "overall": "tie"}, "warmer")
    assert "Saved" in browser.find_element(By.ID, "flash").text
    assert browser.find_element(By.ID, "progress").text == "Pair 2 of 4"
    assert browser.find_element(By.ID, "left").text != left

    browser.refresh()  # post/redirect/get: a reload re-sends nothing
    assert browser.find_element(By.ID, "progress").text == "Pair 2 of 4"
    assert count_verdicts(server.db) == 1
    vote(browser, {"validating_challenges": "right", "positive_aspects": "tie", "overall": "right"}, "")
    assert browser.find_element(By.ID, "progress").text == "Pair 3 of 4"
    assert count_verdicts(server.db) == 2

    out = esvr("review", "results", "--db", str(server.db), "--no-mlflow", "--out", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["verdicts"] == 2 and res["raters"] == 1 and res["pairs_judged"] == 2
    assert {m["variant"] for c in res["criteria"].values() for m in c["matchups"]} == {"baseline"}


def test_dialogue_markup_renders_as_text(tmp_path, browser):
    from selenium.webdriver.common.by import By

    (markup,) = [json.loads(x) for x in FIXTURE.read_text().splitlines() if "p4-markup" in x]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(markup) + "\n")
    s = ReviewServer(tmp_path, pairs)
    try:
        browser.delete_all_cookies()
        browser.get(s.invite())
        assert browser.find_element(By.ID, "progress").text == "Pair 1 of 1"
        assert browser.execute_script("return window.__pwned === undefined")
        assert browser.title == "esvr review"
        assert browser.find_elements(By.CSS_SELECTOR, "main img, main script, main b") == []
        text = browser.find_element(By.TAG_NAME, "main").text
        assert "<script>window.__pwned = 1; document.title = 'pwned'</script>I feel stuck." in text
        assert '"><img src=x onerror="window.__pwned=2">That sounds frustrating & tiring.' in text
        assert "<b>bold?</b> {{ 7*7 }} [red]markup[/red]" in text
    finally:
        s.stop()


def test_wrong_or_missing_token_gets_403(server, browser):
    from selenium.webdriver.common.by import By

    link = server.invite()
    token = link.split("token=", 1)[1]
    form = {"pair": "x", "csrf": "x", "validating_challenges": "tie", "positive_aspects": "tie", "overall": "tie"}
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as c:
        assert c.get("/").status_code == 403
        assert c.get("/?token=").status_code == 403
        assert c.get("/?token=" + token[:-1] + ("A" if token[-1] != "A" else "B")).status_code == 403
        assert c.get("/pair").status_code == 403
        assert c.get("/pair", cookies={"esvr_rater": "nope"}).status_code == 403
        assert c.post("/verdict", data=form).status_code == 403
        assert c.get("/api/next").status_code == 403
        bad = {"Authorization": "Bearer nope"}
        assert c.post("/api/verdicts", json={"pair_id": "p1"}, headers=bad).status_code == 403
        ok = c.get("/?token=" + token)
        assert ok.status_code == 303 and ok.headers["location"] == "/pair"
        assert c.get("/pair", cookies={"esvr_rater": token}).status_code == 200
        # the right cookie but a forged form (no CSRF value of this rater) is refused too
        assert c.post("/verdict", data=form, cookies={"esvr_rater": token}).status_code == 403
    assert count_verdicts(server.db) == 0
    browser.delete_all_cookies()
    browser.get(server.url + "/?token=wrong")
    assert "403" in browser.find_element(By.TAG_NAME, "h1").text


@pytest.mark.slow  # 16-30 s on the shared 2-core box: 600 requests through one server
def test_50_concurrent_raters_lose_nothing_and_count_nothing_twice(server):
    n_raters, n_pairs = 50, 4
    links = [server.invite(f"r{i}") for i in range(2)]  # the CLI path, then the rest in-process (same file, WAL)
    from tasks.review.db import ReviewDB

    db = ReviewDB(server.db, 10_000)
    tokens = [link.split("token=", 1)[1] for link in links] + [db.invite(f"r{i}", 24)[1]
                                                               for i in range(2, n_raters)]
    start = threading.Barrier(n_raters)
    statuses: list[int] = []
    lock = threading.Lock()

    def rater(i: int, token: str) -> None:
        choice = ("left", "right", "tie")[i % 3]
        with httpx.Client(base_url=server.url, timeout=60, follow_redirects=False) as c:
            start.wait()
            for _ in range(n_pairs):
                if i % 2:  # half submit through the page's form (cookie + CSRF), half through the JSON API
                    html = c.get("/pair", cookies={"esvr_rater": token}).text
                    handle = re.search(r'name="pair" value="([0-9a-f]+)"', html).group(1)
                    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)
                    form = {"pair": handle, "csrf": csrf, "validating_challenges": choice,
                            "positive_aspects": choice, "overall": choice, "comment": f"rater {i}"}
                    codes = [c.post("/verdict", data=form, cookies={"esvr_rater": token}) for _ in range(2)]
                    got = [(r.status_code, r.headers.get("location")) for r in codes]
                    assert got == [(303, "/pair?status=saved"), (303, "/pair?status=duplicate")], got
                else:
                    auth = {"Authorization": f"Bearer {token}"}
                    handle = c.get("/api/next", headers=auth).json()["pair"]
                    body = {"pair": handle, "validating_challenges": choice, "positive_aspects": choice,
                            "overall": choice, "comment": f"rater {i}"}
                    codes = [c.post("/api/verdicts", json=body, headers=auth) for _ in range(2)]
                    assert [r.status_code for r in codes] == [201, 200], [r.text for r in codes]
                with lock:
                    statuses.extend(r.status_code for r in codes)

    with ThreadPoolExecutor(n_raters) as pool:
        for f in [pool.submit(rater, i, t) for i, t in enumerate(tokens)]:
            f.result()
    assert len(statuses) == n_raters * n_pairs * 2
    assert count_verdicts(server.db) == n_raters * n_pairs

    out = esvr("review", "results", "--db", str(server.db), "--no-mlflow")  # MLflow: tests/unit/test_review_core.py
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["verdicts"] == n_raters * n_pairs and res["raters"] == n_raters and res["pairs_judged"] == n_pairs
    agreement = res["criteria"]["overall"]["agreement"]
    assert agreement["pairs_with_2plus_raters"] == n_pairs and agreement["alpha"] is not None
    (row,) = res["criteria"]["overall"]["matchups"]
    assert row["verdicts"] == n_raters * n_pairs and row["pairs"] == n_pairs
