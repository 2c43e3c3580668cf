"""The prometheus_client seam refuses a version it was not tested with, by name."""

from __future__ import annotations

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
