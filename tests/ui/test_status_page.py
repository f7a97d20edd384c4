"""The status page in real headless Chromium against a real, probing gateway on fake backends: what an
operator reads on it, and what it must never show."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from stub_gateway import DROP, StubGateway, minimal_status
from ui_estate import ADMIN, CHAT_MODEL, SECRETS, Estate
from ui_support import Node, dump_dom, run_chromium, screenshot


@pytest.fixture(scope="module")
def page(estate: Estate) -> Node:
    return dump_dom(estate.page_url + "/ui")


def backend_row(page: Node, name: str) -> Node:
    return page.one("tr", data_backend=name)


def state_of(row: Node) -> tuple[str, str]:
    badge = next(n for n in row.iter() if "data-state" in n.attrs)
    return badge.attrs["data-state"], badge.text


def test_the_page_renders_without_errors_and_is_titled_by_the_fabric(page: Node) -> None:
    body = page.one("body")
    assert body.attrs["data-connection"] == "ok"
    assert int(body.attrs["data-refreshes"]) >= 2  # it refreshed by itself, without a reload
    assert "hidden" in page.by_id("page-errors").attrs, page.by_id("page-errors").text
    assert page.one("title").text == "broken · fabric.yaml · aifabric"
    assert page.by_id("fabric-name").text == "· fabric.yaml"
    assert page.by_id("fabric-source").text == "fabric file: /etc/aifabric/fabric.yaml"
    overall = page.by_id("overall")
    assert overall.attrs["data-status"] == "broken"
    assert "1 down" in overall.text and "1 asleep" in overall.text and "1 mismatched" in overall.text


def test_every_backend_shows_its_state_in_words(page: Node) -> None:
    expected = {
        "gpu": "up",
        "flaky": "up",
        "embed": "up",
        "dead": "down",
        "workstation": "asleep",
        "slow": "up",
    }
    for name, state in expected.items():
        row = backend_row(page, name)
        assert state_of(row)[0] == state
        assert state_of(row)[1].endswith(state), row.text  # the word, not only a colour
    gpu = backend_row(page, "gpu")
    assert "serving" in gpu.text and "vllm" in gpu.text and "box" in gpu.text
    assert re.search(r"\d+(\.\d)? ms", gpu.one("td", **{"class": "num"}).text)  # probe latency
    assert f"✓ {CHAT_MODEL}" in gpu.text
    assert "requests waiting: 0" in gpu.text  # vLLM's load signals
    assert "slots busy: 0" in backend_row(page, "slow").text  # llama-server's


def test_a_stopped_backend_is_down_and_says_why(page: Node, estate: Estate) -> None:
    dead = backend_row(page, "dead")
    assert state_of(dead)[0] == "down"
    reason = dead.one("td", **{"class": "reason"}).text
    assert "cannot connect" in reason and "Connection refused" in reason
    assert f"127.0.0.1:{estate.dead_port}" in reason
    asleep = backend_row(page, "workstation")
    assert "a host that may be powered off: expected" in asleep.text
    assert "(may sleep)" in asleep.text


def test_a_drifted_model_id_shows_the_fix(page: Node) -> None:
    drift = page.one("tr", data_drift="embed")
    assert "config says bge-base-en-v1.5, embed serves BAAI/bge-base-en-v1.5" in drift.text
    assert "set the target's model to 'BAAI/bge-base-en-v1.5' in the fabric file" in drift.text
    models = backend_row(page, "embed").one("td", **{"class": "models"}).text
    assert "✗ bge-base-en-v1.5 not served" in models and "BAAI/bge-base-en-v1.5" in models
    # The role that sends the wrong id says so on its target too, and that nothing can serve it.
    role = page.one("article", data_role="embeddings-general")
    target = role.one("tr", data_target="embeddings-general/embed/bge-base-en-v1.5")
    assert target.attrs["data-routing"] == "mismatch"
    assert (
        "set the target's model to 'BAAI/bge-base-en-v1.5'"
        in role.one("tr", data_drift="embeddings-general/embed").text
    )
    assert "0 of 1 target available" in role.text and "requests to it fail" in role.text


def test_roles_show_their_targets_and_how_they_route(page: Node) -> None:
    fast = page.one("article", data_role="chat-fast")
    assert "quick answers for interactive tools" in fast.text
    assert "call as chat-fast, local/chat" in fast.text
    assert "then falls back to chat-deep (1/2 available)" in fast.text
    assert "balance least_outstanding · session affinity" in fast.text
    assert "1 of 2 targets available" in fast.text
    gpu = fast.one("tr", data_target=f"chat-fast/gpu/{CHAT_MODEL}")
    cells = [td.text for td in gpu.find_all("td")]
    assert cells[1:4] == [CHAT_MODEL, "2", "✓ available"]
    assert cells[5] == "0"  # queued at the engine (vLLM's own count)
    assert re.fullmatch(r"\d+(\.\d)? ms", cells[6])  # EWMA latency of real requests
    assert "overflows at 2 queued (0 requests so far)" in fast.text
    assert fast.find_all("p", data_overflowing="") == []  # nothing saturated
    flaky = fast.one("tr", data_target=f"chat-fast/flaky/{CHAT_MODEL}")
    assert flaky.attrs["data-routing"] == "ejected"
    assert re.search(r"✕ ejected until \d\d:\d\d:\d\d \(\d+ min \d+ s more\)", flaky.text), flaky.text
    assert "after failed requests; ejected 1 time" in flaky.text

    deep = page.one("article", data_role="chat-deep")
    assert "call as chat-deep, local/reasoner" in deep.text and "no fallback" in deep.text
    asleep = deep.one("tr", data_target="chat-deep/workstation/Llama-3-8B-Instruct-AWQ")
    assert asleep.attrs["data-routing"] == "backend-asleep" and "✕ backend asleep" in asleep.text
    slow = deep.one("tr", data_target="chat-deep/slow/Llama-3-8B-Instruct-AWQ")
    assert [td.text for td in slow.find_all("td")][4] == "1"  # the held request, in flight

    legacy = page.one("article", data_role="chat-legacy")
    assert legacy.one("tr", data_target="chat-legacy/dead/old-model").attrs["data-routing"] == "backend-down"


def test_it_says_what_a_client_should_call(page: Node, estate: Estate) -> None:
    connect = page.by_id("connect-body")
    assert f"Base URL {estate.url}/v1" in connect.text
    auth = connect.one("p", data_auth="required").text
    assert auth.startswith("API key required") and "aifabric keys create" in auth  # not only api_keys
    names = {
        row.attrs["data-model-name"]: [td.text for td in row.find_all("td")]
        for row in connect.find_all("tr")
        if "data-model-name" in row.attrs
    }
    assert set(names) == {
        "chat-fast",
        "chat-deep",
        "embeddings-general",
        "chat-legacy",
        "local/chat",
        "local/reasoner",
        "local/embed",
    }
    assert names["local/embed"] == ["local/embed", "embeddings", "alias of embeddings-general"]
    assert names["chat-deep"] == ["chat-deep", "chat", "role"]
    assert '"model": "chat-fast"' in connect.one("pre").text


def test_requests_are_counted(page: Node, estate: Estate) -> None:
    summary = page.by_id("requests-body").text
    assert f"{estate.requests_sent} requests, 1 error (" in summary  # the unknown model's 404
    assert "HTTP 404: 1" in summary and "(no role)" in summary


def test_the_requests_of_several_workers_are_said_to_be_summed() -> None:
    """`serve --workers 2` sums its workers' counts in /status (`requests.workers`); an older gateway's
    answer without it is read as the answering worker's own, as it was."""
    gateway = {**minimal_status()["gateway"], "workers": 2, "pid": 41}
    counted = {"total": 40, "errors": 4, "by_role": {}, "by_status": {"200": 36, "404": 4}}
    notes = []
    for requests in ({**counted, "workers": 2}, counted):
        view = minimal_status(gateway=gateway, requests=requests)
        with StubGateway(status=lambda n, v=view: v) as stub:  # type: ignore[misc]
            notes.append(dump_dom(stub.url + "/ui").by_id("requests-body").text)
    assert "40 requests, 4 errors" in notes[0]
    assert "Counted by all 2 workers of this gateway since they started" in notes[0]
    assert "(this refresh answered by pid 41)" in notes[0]
    assert "Counted by this gateway process (pid 41) since it started; it is one of 2 workers" in notes[1]


def test_no_secret_is_shown_anywhere(page: Node, estate: Estate) -> None:
    raw = run_chromium(estate.page_url + "/ui", "--dump-dom").stdout
    seen = {
        "page": raw,
        "/status": httpx.get(estate.url + "/status", headers=ADMIN).text,
        "/health": httpx.get(estate.url + "/health", headers=ADMIN).text,
        "/ui/app.js": httpx.get(estate.url + "/ui/app.js", headers=ADMIN).text,
    }
    for where, text in seen.items():
        for secret in SECRETS:
            assert secret not in text, f"{where} shows a secret"
    assert "http://ops:********@127.0.0.1" in backend_row(page, "dead").text  # redacted, still useful
    # With keys configured the page needs an admin key (a browser asks for it), like /status.
    assert httpx.get(estate.url + "/ui", headers=ADMIN).status_code == 200
    refused = httpx.get(estate.url + "/ui")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(estate.url + "/v1/models").status_code == 401


def test_alerts_follow_the_gateway(page: Node, estate: Estate) -> None:
    alerts = httpx.get(estate.url + "/alerts", headers=ADMIN)
    section = page.by_id("alerts")
    if alerts.status_code == 404:  # a gateway without alerting: no empty section
        assert "hidden" in section.attrs
    else:
        assert "hidden" not in section.attrs


def test_unreachable_gateway_is_said_and_the_last_data_stays() -> None:
    with StubGateway(status=lambda n: minimal_status() if n == 1 else DROP) as stub:
        page = dump_dom(stub.url + "/ui")
    assert page.one("body").attrs["data-connection"] == "unreachable"
    assert page.one("title").text == "unreachable · stub.yaml · aifabric"
    banner = page.by_id("banner")
    assert "hidden" not in banner.attrs
    assert banner.text.startswith("Gateway unreachable: could not connect to 127.0.0.1:")
    assert "Showing what it said at" in banner.text
    assert page.by_id("main").has_class("stale")
    overall = page.by_id("overall")  # the last verdict is not passed off as current
    assert overall.attrs["data-status"] == "stale" and overall.text.startswith("last known: ")
    assert page.one("tr", data_backend="gpu")  # the last good data is still on the page
    assert "hidden" in page.by_id("page-errors").attrs
    assert "null" not in page.by_id("main").text and "undefined" not in page.by_id("main").text


def test_a_gateway_never_reached_and_one_that_errs() -> None:
    with StubGateway(status=lambda n: DROP) as stub:
        page = dump_dom(stub.url + "/ui")
    assert page.by_id("banner").text.startswith("Gateway unreachable")
    assert page.by_id("updated").text == "no data yet"
    assert page.by_id("overall").text == "? no answer from the gateway yet"
    with StubGateway(status=lambda n: 500) as stub:
        page = dump_dom(stub.url + "/")
    assert page.one("body").attrs["data-connection"] == "error"
    assert "it answered HTTP 500 to /status" in page.by_id("banner").text


@pytest.mark.parametrize("path", ["/", "/ui/"])
def test_the_page_works_from_every_address(path: str) -> None:
    with StubGateway(status=lambda n: minimal_status()) as stub:
        page = dump_dom(stub.url + path)
    assert page.one("body").attrs["data-connection"] == "ok"
    assert page.one("tr", data_backend="gpu")


def test_every_state_reads_in_words_and_symbols() -> None:
    """All six backend states, as the gateway names them, each with its symbol and word."""
    base = minimal_status()["backends"]["gpu"]
    states = ("up", "degraded", "loading", "down", "asleep", "unknown")
    backends = {s: {**base, "name": s, "state": s, "reason": f"why {s}"} for s in states}
    with StubGateway(status=lambda n: minimal_status(backends=backends, status="broken")) as stub:
        page = dump_dom(stub.url + "/ui")
    symbols = {"up": "●", "degraded": "▲", "loading": "◌", "down": "✕", "asleep": "☾", "unknown": "?"}
    for state in states:
        badge = page.one("tr", data_backend=state).one("span", data_state=state)
        assert badge.text == f"{symbols[state]} {state}"
        assert badge.has_class(f"state-{state}")
        assert f"why {state}" in page.one("tr", data_backend=state).text


def test_text_from_the_gateway_is_shown_as_text_never_as_markup() -> None:
    """A reason or description comes from a backend or the fabric file: it must not become page code."""
    gpu = minimal_status()["backends"]["gpu"]
    hostile = '<img src=x onerror="document.title=1">'
    backends = {"gpu": {**gpu, "state": "down", "reason": hostile}}
    with StubGateway(status=lambda n: minimal_status(backends=backends)) as stub:
        page = dump_dom(stub.url + "/ui")
    assert hostile in page.one("tr", data_backend="gpu").text
    assert not page.find_all("img")


def test_a_gateway_without_alerts_is_asked_once_per_process() -> None:
    """Each 404 counts as an error in the gateway's metrics: the page does not poll for it every 2 s."""
    pids = iter([7, 7, 7, 8])  # the gateway restarted (a new pid) before the last refresh

    def status(n: int) -> object:
        return minimal_status(gateway={**minimal_status()["gateway"], "pid": next(pids, 8)})

    with StubGateway(status=status) as stub:
        page = dump_dom(stub.url + "/ui", budget_ms=7000)
        calls = dict(stub.calls)
    assert calls["/status"] >= 4
    assert calls["/alerts"] == 2  # once for pid 7, once for pid 8
    assert "hidden" in page.by_id("alerts").attrs


def test_alerts_are_listed_when_the_gateway_has_them() -> None:
    alerts = {
        "alerts": [
            {
                "name": "backend_down",
                "severity": "critical",
                "subject": "armitage-vllm",
                "message": "armitage-vllm down for 5 min: connection refused",
                "for_seconds": 300,
            }
        ]
    }
    with StubGateway(status=lambda n: minimal_status(), alerts=lambda n: alerts) as stub:
        page = dump_dom(stub.url + "/ui")
    section = page.by_id("alerts")
    assert "hidden" not in section.attrs
    row = section.one("tr", data_alert="backend_down")
    assert [td.text for td in row.find_all("td")] == [
        "critical",
        "backend_down",
        "armitage-vllm",
        "armitage-vllm down for 5 min: connection refused",
        "for 5 min 0 s",
    ]
    with StubGateway(status=lambda n: minimal_status(), alerts=lambda n: []) as stub:
        page = dump_dom(stub.url + "/ui")
    assert page.by_id("alerts").text == "Active alerts ✓ No active alerts."


def test_screenshot(estate: Estate, tmp_path: Path) -> None:
    """One picture at a laptop's size (look at it when the page changes: docs/ui.md says how)."""
    shot = tmp_path / "status.png"
    screenshot(estate.page_url + "/ui", shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
