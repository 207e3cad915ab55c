"""The controller's nginx.conf as nginx has it, read back (`nginx -T` in its pod's namespace):
its servers and locations, parsed as nginx matches them, and what the location a request takes
there says against the one of the conf the model renders (`mismatch`). verify's ingress judge
adds it to a wrong answer's reason, so a conf changed by hand (a path type flipped, a location
gone) is named by its `location` line. Pure, except `read`.

The parser is nginx's own grammar in small: words, quoted strings, `#` comments, `;` and blocks
in braces, so a conf reformatted by hand still parses. Regular-expression locations (`~`, `~*`)
are left out: the model never writes them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from .conf import nginx_argv
from .table import pick


@dataclass(frozen=True)
class LiveConf:
    """Where a check finds the controller's conf, and what the model says it should be."""
    ns: str                      # the controller pod's namespace
    conf: str                    # the conf nginx runs with (its -c)
    state: str                   # its prefix (-p), the lab's state directory for nginx
    model: str                   # the nginx.conf the model renders
    port: int                    # the port the check's request arrives on at nginx


@dataclass(frozen=True)
class LiveLocation:
    op: str                      # "=" exact, "" prefix
    path: str
    does: str                    # "proxy_pass http://shop-api-80", "return 404"

    @property
    def line(self) -> str:
        return f"location {self.op + ' ' if self.op else ''}{self.path}"


@dataclass(frozen=True)
class LiveServer:
    port: int
    host: Optional[str]          # None: the port's default_server
    locations: tuple[LiveLocation, ...]


# ---------------------------------------------------------------- parsing

def _tokens(text: str) -> list[str]:
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in "{};":
            out.append(ch)
            i += 1
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i + 1:j])
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "{};":
                # ${name} inside a word is a variable, its braces no block
                j = text.find("}", j) + 1 or n if text.startswith("${", j) else j + 1
            out.append(text[i:j])
            i = j
    return out


def _tree(tokens: list[str]) -> list[tuple[list[str], Optional[list]]]:
    """Directives as (words, children or None): `a b;` and `a b { ... }`."""
    stack: list[list] = [[]]
    words: list[str] = []
    for t in tokens:
        if t == ";":
            stack[-1].append((words, None))
            words = []
        elif t == "{":
            block: list = []
            stack[-1].append((words, block))
            stack.append(block)
            words = []
        elif t == "}":
            if len(stack) > 1:
                stack.pop()
            words = []
        else:
            words.append(t)
    return stack[0]


def _port(listen: list[str]) -> Optional[int]:
    addr = listen[0] if listen else "80"
    if addr.startswith("unix:"):
        return None
    last = addr.rsplit(":", 1)[-1].rstrip("]")
    return int(last) if last.isdigit() else 80


def _location(words: list[str], body: list) -> Optional[LiveLocation]:
    args = words[1:]
    if not args or args[0] in ("~", "~*") or args[0].startswith("@"):
        return None
    op, path = ("=", args[1]) if args[0] == "=" and len(args) > 1 else \
        ("", args[1] if args[0] == "^~" and len(args) > 1 else args[0])
    does = next((" ".join(w) for w, b in body if b is None and w and
                 w[0] in ("proxy_pass", "return")), "nothing")
    return LiveLocation(op, path, does)


def parse(text: str) -> list[LiveServer]:
    """Every (port, server name) of the conf's http block with its locations, one LiveServer a
    name (and one with host None for a `listen ... default_server`)."""
    out = []
    for words, block in _tree(_tokens(text)):
        if words[:1] != ["http"] or block is None:
            continue
        for swords, server in block:
            if swords[:1] != ["server"] or server is None:
                continue
            listen = next((w[1:] for w, b in server if b is None and w[:1] == ["listen"]), [])
            port = _port(listen)
            if port is None:
                continue
            names = next((w[1:] for w, b in server if b is None and w[:1] == ["server_name"]),
                         [])
            locs = tuple(loc for w, b in server if b is not None and w[:1] == ["location"]
                         for loc in [_location(w, b)] if loc is not None)
            hosts: list[Optional[str]] = [h.lower() for h in names if h != "_"]
            if "default_server" in listen or "default" in listen:
                hosts.append(None)
            out += [LiveServer(port, h, locs) for h in hosts or [""]]
    return out


# ---------------------------------------------------------------- comparing

def mismatch(live_text: str, model_text: str, ns: str, port: int, host: str,
             path: str) -> str:
    """What the location a request takes in the live conf says against the model's conf: "" when
    they agree (the fault is elsewhere), else one clause naming both `location` lines."""
    want_srv, want = pick(parse(model_text), port, host, path)
    live = parse(live_text)
    where = f"the live nginx.conf in {ns}"
    try:
        srv, got = pick(live, port, host, path)
    except ValueError:
        return f"{where} has no server on port {port}"
    name = host.split(":")[0]
    if got is None:
        return (f"no location of {where} takes {name}{path}, where the model has "
                f"`{want.line}` ({want.does})")
    if want is not None and got.line == want.line and got.does == want.does:
        return ""
    if want is None:
        return f"{where} takes {name}{path} by `{got.line}` ({got.does}), the model by none"
    if got.line == want.line:
        return (f"`{got.line}` of {where} does {got.does} for {name}{path}, the model's "
                f"does {want.does}")
    extra = "" if any(lc.line == got.line for lc in want_srv.locations) else \
        ", a location the model does not have"
    missing = "" if any(lc.line == want.line for lc in srv.locations) else ", missing there"
    return (f"{where} takes {name}{path} by `{got.line}` ({got.does}){extra}; the model's is "
            f"`{want.line}` ({want.does}){missing}")


def read(live: LiveConf) -> tuple[Optional[str], str]:
    """(the conf nginx -T dumps in the controller's namespace, or None; nginx's own words)."""
    if not os.path.exists(f"/run/netns/{live.ns}"):
        return None, ""                    # not a lab that is up (a check judged on its own)
    argv = ["ip", "netns", "exec", live.ns] + nginx_argv(live.conf, live.state) + ["-T", "-q"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if proc.returncode != 0:
        return None, proc.stderr.strip()[-300:]
    return proc.stdout, ""


def explain(live: LiveConf, host: str, path: str) -> str:
    """The clause verify adds to a wrong answer: "" when the live conf is the model's."""
    text, err = read(live)
    if text is None:
        return f"`nginx -T` in {live.ns} fails: {err}" if err else ""
    try:
        return mismatch(text, live.model, live.ns, live.port, host, path)
    except ValueError:
        return ""
