"""Intervention modes as objects: one definition per mode, read by every caller."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from finwidget.errors import InputError
from finwidget.interventions import MODES, HeadIntervention, mode_catalogue, mode_named
from finwidget.interventions.modes import MODE_OBJECTS

PACKAGE = Path(__file__).resolve().parents[1] / "finwidget"


def test_the_catalogue_is_json_data_in_mode_order():
    catalogue = mode_catalogue()
    assert json.loads(json.dumps(catalogue)) == catalogue
    assert [entry["name"] for entry in catalogue] == list(MODES) == ["zero", "constant", "mean", "resample", "scale"]
    for entry in catalogue:
        assert set(entry) == {"name", "takes_value", "default_value", "needs_reference", "needs_source", "summary"}
        assert entry["summary"].endswith(".")
        assert (entry["default_value"] is not None) == entry["takes_value"]
    by_name = {entry["name"]: entry for entry in catalogue}
    assert by_name["mean"]["needs_reference"] and by_name["resample"]["needs_source"]
    assert by_name["scale"]["takes_value"] and not by_name["zero"]["takes_value"]


def test_each_mode_replaces_the_output_as_documented():
    z = torch.randn(2, 3, 4)
    recorded = torch.randn(4)
    assert torch.equal(mode_named("zero").replace(z, None, None), torch.zeros_like(z))
    assert torch.equal(mode_named("constant").replace(z, 1.5, None), torch.full_like(z, 1.5))
    assert torch.equal(mode_named("scale").replace(z, -2.0, None), z * -2.0)
    for name in ("mean", "resample"):
        assert torch.equal(torch.broadcast_to(mode_named(name).replace(z, None, recorded), z.shape),
                           recorded.expand_as(z))


def test_values_are_checked_against_the_mode_objects():
    with pytest.raises(InputError, match="needs value= \\(the factor to multiply by\\)"):
        HeadIntervention(0, 0, "scale")
    with pytest.raises(InputError, match="unknown intervention mode 'banana'"):
        mode_named("banana")
    assert HeadIntervention(0, 1, "scale", value=2).describe() == "L0H1 scale x2"
    assert HeadIntervention(0, 1, "constant", value=0.5).describe() == "L0H1 constant =0.5"
    assert HeadIntervention(0, 1, "mean").needs_reference and HeadIntervention(0, 1, "resample").needs_source


def test_no_module_but_modes_compares_against_a_mode_name():
    """Mode semantics live in modes.py: elsewhere in the interventions package, no code
    branches on ``mode == "scale"`` (or ``in ("zero", ...)``)."""
    offenders = []
    for path in sorted((PACKAGE / "interventions").glob("*.py")):
        if path.name == "modes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            if not any("mode" in ast.unparse(operand) for operand in operands):
                continue
            for operand in operands:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                if any(isinstance(v, ast.Constant) and v.value in MODE_OBJECTS for v in values):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"mode names compared outside modes.py: {offenders}"
