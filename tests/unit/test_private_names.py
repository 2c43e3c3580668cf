"""Only the seam (``bus/_natspy.py``) reaches nats-py's private names.

The syntax tree of every product module (``bus``, ``actors``, ``orchestrator``)
is walked for: an import of a private nats-py module or name; an attribute
named like one of nats-py's private attributes on anything but ``self`` or
``cls``; ``getattr``/``setattr``/``hasattr`` with such a name; a class that
subclasses one of nats-py's (its ``self._...`` would then be nats-py's).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("bus", "actors", "orchestrator")
SEAM = ROOT / "bus" / "_natspy.py"
_REFLECTION = {"getattr", "setattr", "hasattr", "delattr"}
_NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
"""Public despite the underscore (``collections.namedtuple``'s documented methods)."""


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def nats_private_names() -> frozenset[str]:
    """Every private attribute, method and module-level name defined in nats-py."""
    names: set[str] = set()
    for path in Path(nats.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if _private(node.name):
                    names.add(node.name)
            elif isinstance(node, ast.Name) and _private(node.id):
                names.add(node.id)
    return frozenset(names - _NAMEDTUPLE_API)


def _nats_module(module: str | None) -> bool:
    return module is not None and (module == "nats" or module.startswith("nats."))


def violations(source: str, private: frozenset[str]) -> Iterator[tuple[int, str]]:
    """(line, what) for each reach into nats-py's privates in ``source``."""
    tree = ast.parse(source)
    nats_classes: set[str] = set()  # names bound to nats-py classes (not its errors)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _nats_module(node.module):
            assert node.module is not None
            if any(_private(part) for part in node.module.split(".")):
                yield node.lineno, f"import from private module {node.module}"
            for alias in node.names:
                if _private(alias.name):
                    yield node.lineno, f"import of private name {node.module}.{alias.name}"
                elif not node.module.startswith("nats.errors") and alias.name[:1].isupper():
                    nats_classes.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _nats_module(alias.name) and any(_private(p) for p in alias.name.split(".")):
                    yield node.lineno, f"import of private module {alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                yield node.lineno, f"attribute {node.attr}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _REFLECTION
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in private
        ):
            yield node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                root = base
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and (
                    root.id in nats_classes
                    or (root.id == "nats" and "errors" not in ast.unparse(base))
                ):
                    yield node.lineno, f"class {node.name} subclasses nats-py's {ast.unparse(base)}"


def product_modules() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))


def test_only_the_seam_reaches_private_nats_py_names() -> None:
    private = nats_private_names()
    assert {"_pending", "_pending_queue", "_build_message", "_flush_queue"} <= private
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in product_modules()
        if path != SEAM
        for line, what in violations(path.read_text(encoding="utf-8"), private)
    ]
    assert not found, "private nats-py names outside bus/_natspy.py:\n" + "\n".join(found)


def test_the_seam_is_where_the_private_names_are() -> None:
    # the walk sees what it must: the seam itself is full of them
    found = list(violations(SEAM.read_text(encoding="utf-8"), nats_private_names()))
    assert len(found) >= 10


@pytest.mark.parametrize(
    "source",
    [
        "def f(nc):\n    return nc._pending_data_size\n",
        "def f(sub):\n    sub._pending_queue = None\n",
        "def f(nc):\n    return getattr(nc, '_subs', {})\n",
        "from nats.aio.client import _CRLF_\n",
        "import nats.aio._private\n",
        "from nats.aio.client import Client\nclass C(Client):\n    pass\n",
        "import nats.aio.client\nclass C(nats.aio.client.Client):\n    pass\n",
        "def f(self):\n    return super()._select_next_server()\n",
    ],
)
def test_each_kind_of_reach_is_caught(source: str) -> None:
    assert list(violations(source, nats_private_names()))


@pytest.mark.parametrize(
    "source",
    [
        "class A:\n    def f(self):\n        return self._pending\n",
        "import nats.errors\nclass E(nats.errors.Error):\n    pass\n",
        "from nats.errors import Error\nclass E(Error):\n    pass\n",
        "def f(nc):\n    return nc.max_payload, nc.pending_data_size\n",
    ],
)
def test_public_use_passes(source: str) -> None:
    assert not list(violations(source, nats_private_names()))
