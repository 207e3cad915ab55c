"""libyaml's parser, used for scenarios without anchors, reads them exactly as the Python one."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import ROOT

from netlab import model
from netlab.core import yamlfile

sys.path.insert(0, str(ROOT / "bench"))
import gen  # noqa: E402

pytestmark = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


@pytest.mark.parametrize("text", [model.DEFAULT_SCENARIO.read_text(), gen.scenario(3, 5, True)])
def test_same_values_and_line_numbers_from_both_parsers(text):
    assert yamlfile._c_parser_safe(text)
    fast = yamlfile._load_yaml(yaml.CSafeLoader, text, "s.yaml")
    slow = yamlfile._load_yaml(yamlfile._Loader, text, "s.yaml")
    assert fast == slow


@pytest.mark.parametrize("text", ["a: &x [1]\nb: *x\n", "command: [sh, -c, 'a && b']\n",
                                  "nodes: " + "[" * 40 + "]" * 40 + "\n"])
def test_anchors_and_deep_nesting_take_the_python_parser(text):
    assert not yamlfile._c_parser_safe(text)


def test_a_syntax_error_reads_as_before():
    with pytest.raises(model.ScenarioError, match=r"s.yaml:2: YAML syntax error"):
        model.load_yaml("nodes: [\n", "s.yaml")
