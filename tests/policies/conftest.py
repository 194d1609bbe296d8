"""The kit's own stacks as the rules see them: the real program run under mocks, converted exactly
the way `mlflow-stack preview` sends them to the pack."""

from __future__ import annotations

import pytest

from policies.model import Resource


@pytest.fixture(scope="session")
def own_stacks() -> dict[str, list[Resource]]:
    """Every stack in stacks/, as the resources the pack's rules receive."""
    from preview.build import rule_resources
    from preview.offline import list_stacks, run_program

    stacks: dict[str, list[Resource]] = {}
    for stack in list_stacks():
        graph = run_program(stack)
        assert graph.error is None, f"{stack}: {graph.error}"
        stacks[stack] = rule_resources(graph)
    return stacks
