"""The scenario: parse and check a scenario YAML into an immutable Lab, allocating addresses.

Pure: no kernel, no files but the scenario itself. The schema is assembled from the features'
sections (features.FEATURES); each feature checks its own section against the rest and adds its
part. Every error is a ScenarioError naming the file, the line and the fix, so bad input never
reaches the kernel.

The small API for notebooks and tests: `load(path)` and `parse(text, path)` give a Lab;
netlab.api brings it up, verifies it and takes it down.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Union

from pydantic import BaseModel, ValidationError, create_model, field_validator

from .core.errors import ScenarioError
from .core.lab import NETEXEC, NODE_PORT, Lab, Node, Pod, ifname_for, largest_ping_payload, \
    vtep_mac
from .core.schema import NAME_RE, Build, Loc, Spec, Where, did_you_mean
from .core.yamlfile import DEFAULT_SCENARIO, MAX_BYTES, load_yaml, read_scenario
from .features import FEATURES

__all__ = ["load", "parse", "Lab", "Node", "Pod", "ScenarioError", "DEFAULT_SCENARIO", "MAX_BYTES",
           "NETEXEC", "NODE_PORT", "check_lab_name", "ifname_for", "largest_ping_payload",
           "load_yaml", "vtep_mac"]


def check_lab_name(value: str) -> str:
    if not NAME_RE.match(value) or len(value) > 32:
        raise ValueError(f"'{value}' is not a valid lab name: use lowercase letters, digits and "
                         f"'-', at most 32 characters")
    return value


def _assemble() -> type[BaseModel]:
    """The whole scenario's schema, from the features' sections ("network.X" extends network:)."""
    top: dict[str, Any] = {"name": (Optional[str], None), "description": (Optional[str], None)}
    network_extra: dict[str, Any] = {}
    validators: dict[str, Any] = {
        "_lab_name": field_validator("name")(classmethod(
            lambda cls, v: v if v is None else check_lab_name(v)))}
    for feature in FEATURES:
        for key, (kind, default) in feature.schema.items():
            if key.startswith("network."):
                network_extra[key[len("network."):]] = (kind, default)
            else:
                top[key] = (kind, default)
        for key, fn in getattr(feature, "before", {}).items():
            validators[f"_before_{key}"] = field_validator(key, mode="before")(
                classmethod(lambda cls, v, fn=fn: fn(v)))
    if network_extra:
        base, _ = top["network"]
        network = create_model("NetworkSpec", __base__=base, **network_extra)
        top["network"] = (network, network())
    return create_model("ScenarioSpec", __base__=Spec, __validators__=validators, **top)


ScenarioSpec = _assemble()


def _model_at(loc: Loc) -> type[BaseModel]:
    """The section model a location in the scenario is inside, by walking the schema."""
    model: Any = ScenarioSpec
    for key in loc:
        if not isinstance(key, str):
            continue
        info = getattr(model, "model_fields", {}).get(key)
        if info is None:
            info = next((f for f in getattr(model, "model_fields", {}).values() if f.alias == key),
                        None)
        if info is None:
            break
        kind = _section_type(info.annotation)
        if kind is None:
            break
        model = kind
    return model


def _section_type(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def _kind(key: str) -> str:
    """The singular of a section name: pods -> pod, ingresses -> ingress, networkPolicies -> .."""
    if key.endswith("ies"):
        return key[:-3] + "y"
    if key.endswith("sses"):
        return key[:-2]
    return key[:-1] if key.endswith("s") else "item"


def _describe(loc: Loc, data: Any) -> str:
    """pods[2].containers[0] -> "pod 'web', container 'shell'" where names are known."""
    parts, cur = [], data
    for i, key in enumerate(loc):
        if isinstance(key, int) and isinstance(cur, list) and key < len(cur):
            item = cur[key]
            # A list of sections (nodes, pods, services...) names its items; a list of values not.
            section = i and _model_at(loc[:i]) is not _model_at(loc[:i - 1])
            kind = _kind(str(loc[i - 1])) if section else "item"
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"{kind} '{name}'" if isinstance(name, str) else f"{kind} #{key + 1}")
            cur = item
        else:
            cur = cur.get(key) if isinstance(cur, dict) else None
    return ", ".join(parts)


def _fields_of(loc: Loc) -> list[str]:
    return [f.alias or n for n, f in _model_at(loc[:-1]).model_fields.items()]


def _pydantic_error(err: dict, data: Any, where: Where):
    loc = tuple(err["loc"])
    owner = _describe(loc, data)
    prefix = f"{owner}: " if owner else ""
    key = loc[-1] if loc else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _fields_of(loc)
        fix = did_you_mean(str(key), known, f"known fields: {', '.join(known)}", cutoff=0.5)
        where.fail(loc, f"{prefix}unknown field '{key}': {fix}")
    if kind == "missing":
        where.fail(loc[:-1], f"{prefix}field '{key}' is required: add `{key}: ...`")
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        msg = f"'{err['input']}' is not allowed here: {msg.lower()}"
    elif kind in ("int_parsing", "int_type", "string_type", "list_type", "bool_type", "model_type",
                  "dict_type", "int_from_float"):
        msg = f"{msg.lower()}, got {type(err['input']).__name__} {err['input']!r}"
    elif kind == "too_short" and key == "nodes":
        msg = "a lab needs at least one node: add one under `nodes:`"
    where.fail(loc, f"{prefix}{key}: {msg}" if isinstance(key, str) and key else f"{prefix}{msg}")


def load(path: Union[str, Path, None] = None, name: Optional[str] = None) -> Lab:
    """Read, parse and check a scenario file into a Lab (the default scenario when path is None)."""
    text, shown = read_scenario(path)
    return parse(text, shown, name)


def parse(text: str, path: str = "<scenario>", name: Optional[str] = None,
          live: Optional[dict] = None) -> Lab:
    """`live`: what the lab's state says runs now (deployments' current pods, after `scale` and
    `delete`: see features.deployments), so a lab that is up is parsed as it is."""
    data, lines = load_yaml(text, path)
    where = Where(path, lines)
    if not isinstance(data, dict):
        where.fail((), "a scenario is a mapping with at least `nodes:`: start from "
                       "scenarios/three-node.yaml")
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as e:
        # A misspelt field (`form:`) also makes the real one missing: report the typo first.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        _pydantic_error(errors[0], data, where)
    if name is not None:
        try:
            check_lab_name(name)
        except ValueError as e:
            raise ScenarioError(path, None, f"--name: {e}") from None
    lab_name = name or spec.name or _name_from_path(path, where)
    b = Build(spec, lab_name, where)
    if live:
        b.scratch["live"] = live
    for feature in FEATURES:
        feature.build(spec, b)
    return Lab(name=lab_name, source=path, text=text, namespaces=tuple(b.namespaces),
               parts=MappingProxyType(b.parts), **b.fields)


def _name_from_path(path: str, where: Where) -> str:
    stem = Path(path).stem.lower()
    try:
        return check_lab_name(stem)
    except ValueError:
        where.fail((), "the lab has no valid name: add `name: my-lab` at the top")
