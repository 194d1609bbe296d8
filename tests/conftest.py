"""Suite-wide guards: a run that silently tests nothing must fail, not pass.

pytest already exits 5 when nothing is collected. This also catches the quieter failure: the full
suite runs but a whole layer (say, every integration test) vanished — a renamed folder, a conftest
that swallowed an import error — and CI goes green on the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
# Each layer of the suite must contribute tests whenever the whole suite is run.
REQUIRED_LAYERS = ("unit", "policies", "integration", "reliability")


def _required_layers(config: pytest.Config) -> tuple[str, ...]:
    """Every layer for a full run; for a run of whole layer folders (tests/run_layers.py runs the
    suite as two such halves), each of those layers. Anything narrower is a developer's own run."""
    args = [Path(a).resolve() for a in config.args if not a.startswith("-")]
    if not args or all(a in (TESTS_DIR.resolve(), TESTS_DIR.parent.resolve()) for a in args):
        return REQUIRED_LAYERS
    layers = {layer: (TESTS_DIR / layer).resolve() for layer in REQUIRED_LAYERS}
    named = tuple(layer for layer, path in layers.items() if path in args)
    return named if len(named) == len(args) else ()


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    required = _required_layers(config)
    if not required or config.getoption("keyword") or config.getoption("markexpr"):
        return
    per_layer = {layer: 0 for layer in required}
    for item in session.items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS_DIR.resolve())
        if relative.parts and relative.parts[0] in per_layer:
            per_layer[relative.parts[0]] += 1
    missing = [layer for layer, count in per_layer.items() if count == 0]
    if missing:
        raise pytest.UsageError(
            f"the full test suite collected no tests in tests/{', tests/'.join(missing)}; "
            "a whole layer of the suite is missing — fix the collection error instead of shipping a green run"
        )
