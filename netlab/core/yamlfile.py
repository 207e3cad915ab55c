"""The scenario file: read it safely and parse its YAML into plain Python, remembering the line of
every value so that an error can name it.

Refuses what a scenario never needs and an attacker might send: files over 1 MiB, non-UTF-8 bytes,
aliases (YAML bombs), tags, nesting deeper than 50 levels, duplicate keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ScenarioError

MAX_BYTES = 1 << 20  # a scenario larger than 1 MiB is refused before parsing
DEFAULT_SCENARIO = Path(__file__).parent.parent / "scenarios" / "three-node.yaml"
MAX_DEPTH = 50  # a scenario nests 5 levels; far deeper is a mistake or an attack on the parser


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, so a YAML bomb never expands, and deep nesting."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasError(event.start_mark.line + 1)
        if self.depth >= MAX_DEPTH:
            raise _DepthError(self.peek_event().start_mark.line + 1)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _DepthError(Exception):
    def __init__(self, line: int):
        self.line = line


class _AliasError(Exception):
    def __init__(self, line: int):
        self.line = line


Loc = tuple


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def _to_python(loader: _Loader, node, loc: Loc, lines: dict, path: str) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ScenarioError(path, node.start_mark.line + 1, f"the YAML tag '{tag}' is not "
                                                            f"supported: write a plain value")
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError(path, key_node.start_mark.line + 1,
                                    "a key must be a plain word: write `name: value`")
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise ScenarioError(path, key_node.start_mark.line + 1,
                                    f"field '{key}' is given twice: keep one")
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_python(loader, value_node, loc + (key,), lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(loader, item, loc + (i,), lines, path) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def load_yaml(text: str, path: str) -> tuple[Any, dict]:
    """Parse YAML text into plain Python plus a map from location tuple to line number."""
    if _c_parser_safe(text):
        try:
            return _load_yaml(yaml.CSafeLoader, text, path)
        except ScenarioError:
            pass  # the error is reported below, worded by the same parser as always
    return _load_yaml(_Loader, text, path)


def _c_parser_safe(text: str) -> bool:
    """Whether libyaml's parser (C, ~20x faster on a 1,000-pod scenario) may read this text: it
    cannot refuse aliases as _Loader does, so only text without `&` or `*`, and without flow
    brackets nested deeper than 32 (the C composer recurses without a limit)."""
    if not getattr(yaml, "__with_libyaml__", False) or "&" in text or "*" in text:
        return False
    depth = 0
    for c in re.sub(r"[^\[\]{}]", "", text):
        depth += 1 if c in "[{" else -1
        if depth > 32:
            return False
    return True


def _load_yaml(loader_class: type, text: str, path: str) -> tuple[Any, dict]:
    try:
        loader = loader_class(text)  # checks every character first
    except yaml.reader.ReaderError as e:
        _reader_error(e, text, path)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ScenarioError(path, 1, "the scenario is empty: start from scenarios/three-node.yaml")
        lines: dict = {}
        return _to_python(loader, root, (), lines, path), lines
    except _DepthError as e:
        raise ScenarioError(path, e.line, f"the YAML is nested more than {MAX_DEPTH} levels deep: "
                                          f"flatten it") from None
    except yaml.reader.ReaderError as e:
        _reader_error(e, text, path)
    except _AliasError as e:
        raise ScenarioError(path, e.line, "YAML anchors and aliases (*name) are not supported: "
                                          "write the value out") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = (e.problem or e.context or "invalid YAML").strip()
        raise ScenarioError(path, line, f"YAML syntax error: {what}: check indentation, colons "
                                        f"and quotes") from None
    except yaml.YAMLError as e:
        raise ScenarioError(path, None, f"YAML error: {e}".replace("\n", " ")) from None
    except RecursionError:
        raise ScenarioError(path, None, "the YAML is nested too deeply: flatten it") from None
    finally:
        loader.dispose()


def _reader_error(e: yaml.reader.ReaderError, text: str, path: str):
    line = text[: e.position].count("\n") + 1
    raise ScenarioError(path, line, f"the character {chr(e.character)!r} is not allowed in YAML: "
                                    f"remove it") from None



def read_scenario(path: Union[str, Path, None]) -> tuple[str, str]:
    """Read a scenario file as text; the default scenario when path is None."""
    p = Path(path) if path is not None else DEFAULT_SCENARIO
    shown = str(path) if path is not None else "scenarios/three-node.yaml"
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(shown, None, "no such file: give the path of a scenario YAML, "
                                         "e.g. scenarios/three-node.yaml") from None
    except IsADirectoryError:
        raise ScenarioError(shown, None, "is a directory: give the path of a scenario YAML") from None
    except OSError as e:
        raise ScenarioError(shown, None, f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        line = raw[:MAX_BYTES].count(b"\n") + 1
        raise ScenarioError(shown, line, "the file is larger than 1 MiB (reached on this line): a "
                                         "scenario is a short description, generate a smaller one")
    try:
        return raw.decode("utf-8"), shown
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ScenarioError(shown, line, f"byte 0x{raw[e.start]:02x} is not UTF-8: save the "
                                         f"file as UTF-8") from None

