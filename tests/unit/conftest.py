"""Shared fixtures for unit tests: the real program run offline (under Pulumi mocks) per stack file.

Each stack's graph is built once per session: running the program is the slow part (~1 s a stack).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from preview.offline import ResourceGraph, run_program


@pytest.fixture(scope="session")
def stack_graph() -> Callable[[str], ResourceGraph]:
    """`stack_graph("prod")` -> the ResourceGraph of stacks/Pulumi.prod.yaml (cached for the session)."""
    cache: dict[str, ResourceGraph] = {}

    def get(stack: str) -> ResourceGraph:
        if stack not in cache:
            graph = run_program(stack)
            assert graph.error is None, f"stack file {stack} is invalid:\n{graph.error}"
            cache[stack] = graph
        return cache[stack]

    return get
