"""The prometheus_client seam refuses a version it was not tested with, by name."""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path

import pytest

from bus.observability._prometheus import TESTED_VERSIONS, check_version


def test_the_installed_prometheus_client_is_in_the_tested_range() -> None:
    check_version(version("prometheus-client"))


@pytest.mark.parametrize("installed", ["0.19.0", "0.27.0", "1.0.0", "garbage"])
def test_a_version_outside_the_range_is_refused_with_the_range_and_the_fix(installed: str) -> None:
    with pytest.raises(ImportError) as refused:
        check_version(installed)
    message = str(refused.value)
    assert installed in message
    assert "pip install 'prometheus-client>=0.20,<0.27'" in message


@pytest.mark.parametrize("installed", ["0.20.0", "0.26.0", "0.26.1rc1"])
def test_a_version_inside_the_range_is_taken(installed: str) -> None:
    check_version(installed)


def test_the_pin_in_pyproject_is_the_tested_range() -> None:
    (low_major, low_minor), (high_major, high_minor) = TESTED_VERSIONS
    pin = f'"prometheus-client>={low_major}.{low_minor},<{high_major}.{high_minor}"'
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert pin in pyproject


PROMETHEUS_INTERNALS = {
    "_metric_init",
    "_value",
    "_labelvalues",
    "_sum",
    "_buckets",
    "_upper_bounds",
}
"""The private attributes the seam reaches (with the ``values`` module); common
names, so they count only in a module that imports prometheus_client."""


def test_no_product_module_but_the_seam_reaches_into_prometheus_client() -> None:
    root = Path(__file__).resolve().parents[2]
    seam = root / "bus" / "observability" / "_prometheus.py"
    offenders = []
    for package in ("bus", "actors", "orchestrator"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            uses_prometheus = any(
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("prometheus_client")
                for node in ast.walk(tree)
            )
            if path == seam or not uses_prometheus:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in PROMETHEUS_INTERNALS:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
                if isinstance(node, ast.FunctionDef) and node.name == "_metric_init":
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} def _metric_init")
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "prometheus_client"
                ):
                    names = {alias.name for alias in node.names}
                    if "values" in names or node.module == "prometheus_client.values":
                        offenders.append(f"{path.relative_to(root)}:{node.lineno} import")
    assert not offenders
