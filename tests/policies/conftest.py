"""The kit's own stacks as the rules see them: the real program run under mocks, converted exactly
the way `mlflow-stack preview` sends them to the pack."""

from __future__ import annotations

import pytest
from policy_helpers import unwrap_secrets

from policies.model import Provider, Resource


@pytest.fixture(scope="session")
def own_stacks() -> dict[str, list[Resource]]:
    """Every stack in stacks/, as the resources the pack's rules receive."""
    from cli.preview import analyzed_resources
    from infra.offline import list_stacks, run_program

    stacks: dict[str, list[Resource]] = {}
    for stack in list_stacks():
        graph = run_program(stack)
        assert graph.error is None, f"{stack}: {graph.error}"
        stacks[stack] = [
            Resource(
                type=a.type,
                name=a.name,
                urn=a.urn,
                props=unwrap_secrets(a.outputs),
                provider=Provider(a.provider.type, a.provider.name, a.provider.urn, a.provider.props)
                if a.provider
                else None,
                parent=a.parent,
                dependencies=a.dependencies,
                property_dependencies=a.property_dependencies,
            )
            for a in analyzed_resources(graph)
        ]
    return stacks
