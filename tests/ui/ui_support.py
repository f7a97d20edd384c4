"""Headless Chromium against a real gateway, and a small reader for the DOM it dumps.

Chromium is Debian's (`make test` installs it through the Makefile's system-deps target). It only ever
touches 127.0.0.1: background services are off, every host name other than 127.0.0.1 resolves to
nothing, no proxy is used, and the page's own Content-Security-Policy allows only its origin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import httpx

_ISOLATION = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--no-pings",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: `make system-deps` (or `apt-get install -y chromium`) installs it"
    return found


def run_chromium(url: str, *action: str, budget_ms: int = 5000) -> subprocess.CompletedProcess[str]:
    """Load `url` in a fresh headless profile, let the page run `budget_ms` of virtual time, then act."""
    assert re.match(r"http://([^@/]+@)?127\.0\.0\.1:", url), url
    with tempfile.TemporaryDirectory(prefix="aifabric-chromium-") as profile:
        env = {**os.environ, "HOME": profile}  # crash dumps, caches and keyrings stay in the temp dir
        for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(proxy, None)
        return subprocess.run(
            [
                chromium(),
                *_ISOLATION,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *action,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )


def dump_dom(url: str, budget_ms: int = 5000) -> Node:
    """The page's DOM after `budget_ms` of virtual time (several refreshes of the page)."""
    done = run_chromium(url, "--dump-dom", budget_ms=budget_ms)
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-3000:]
    return parse_html(done.stdout)


def screenshot(url: str, path: Path, size: str = "1280,900") -> None:
    done = run_chromium(url, f"--screenshot={path}", f"--window-size={size}", "--hide-scrollbars")
    assert done.returncode == 0 and path.exists(), done.stderr[-3000:]


# --------------------------------------------------------------------------------------- a tiny DOM

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text content, whitespace collapsed (what a reader sees, roughly)."""
        parts: list[str] = []

        def walk(node: Node) -> None:
            for child in node.children:
                if isinstance(child, str):
                    parts.append(child)
                else:
                    walk(child)

        walk(self)
        return " ".join("".join(parts).split())

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Descendants by tag and attributes (`data_backend="gpu"` matches `data-backend="gpu"`)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and all(n.attrs.get(k) == v for k, v in wanted.items())
        ]

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag or '*'} {attrs}>, found {len(found)}"
        return found[0]

    def by_id(self, element_id: str) -> Node:
        return self.one(id=element_id)

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v if v is not None else "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


# ----------------------------------------------------------------------------------------- waiting


def wait_for_status(
    url: str, headers: dict[str, str], ready: Callable[[dict[str, object]], bool], what: str
) -> dict[str, object]:
    """Poll the gateway's /status (with `headers`: an admin key) until `ready(view)`; returns that view."""
    deadline = time.monotonic() + 20
    view: dict[str, object] = {}
    while time.monotonic() < deadline:
        view = httpx.get(url + "/status", headers=headers, timeout=5).json()
        if ready(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last /status: {view}")
