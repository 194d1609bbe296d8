"""Run the real Pulumi program offline, under `pulumi.runtime.set_mocks`, and return what it registers.

There is no Pulumi CLI, no provider plugin and no AWS account here, so `run_program()` plays the
engine: it reads `stacks/Pulumi.<stack>.yaml`, runs `__main__.py` (exactly what `pulumi up` runs)
against mocks that answer like AWS would (preview/mocks.py: ids, ARNs in the stack's region and
partition with a fixed account, availability zones, caller identity), and returns a `ResourceGraph`:
every resource with its type token, logical name, inputs (camelCase, Outputs resolved, secrets
wrapped in `Secret`), parent, provider, `protect` and dependencies, plus the stack outputs — or the
`SettingsError` that stopped the program.

Dependencies are what the engine orders creation by: the RegisterResource request carries the URNs
of explicit `depends_on` resources and of every resource whose Output fed an input (a component
expands to its children). The SDK's mock monitor drops them; `RecordingMonitor` keeps them, so tests
assert ordering rules AWS enforces (a NAT gateway after its internet gateway, a task definition
after its secrets have a value) on the same graph the policy pack sees.

Resource options never reach the mocks, so a stack transformation observes them (`protect`,
`parent`). Every run happens on a fresh thread with a fresh event loop: Pulumi keeps its runtime
state (settings, root stack, config) in context variables, and a new thread starts with an empty
context, so nothing from one stack leaks into the next.
"""

from __future__ import annotations

import asyncio
import json
import runpy
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import run_pulumi_func

from infra.settings import CONFIG_NAMESPACE, PROJECT, SettingsError
from preview.mocks import (  # noqa: F401 - MOCK_ACCOUNT_ID and SECRET_SENTINEL are part of the runner's API
    MOCK_ACCOUNT_ID,
    SECRET_SENTINEL,
    AwsMocks,
    RecordingMonitor,
    _plain,
)

# The checkout this code was imported from: its Pulumi.yaml, program and stack files are the ones
# run here. `find_project()` tells whether a command was started in another checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = "Pulumi.yaml"


def project_options(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Pulumi.yaml of a checkout: the program (`main`) and where stack files live (`stackConfigDir`)."""
    document = yaml.safe_load((root / PROJECT_FILE).read_text()) or {}
    return {"main": document.get("main") or ".", "stackConfigDir": document.get("stackConfigDir") or "."}


def find_project(start: Path | None = None) -> Path:
    """The Pulumi project `pulumi preview` would use from `start` (default: the working directory):
    the nearest directory at or above it that holds a Pulumi.yaml."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    raise FileNotFoundError(
        f"no {PROJECT_FILE} in {here} or any directory above it: run this inside a checkout of the kit"
    )


PROGRAM = REPO_ROOT / project_options()["main"] / "__main__.py"
STACK_DIR = project_options()["stackConfigDir"]


@dataclass(frozen=True)
class Secret:
    """A value the program marked secret (Pulumi encrypts it in the state and masks it in output)."""

    value: Any


@dataclass
class RegisteredResource:
    type: str
    name: str
    urn: str
    id: str | None
    inputs: dict[str, Any]
    parent_urn: str | None
    parent_name: str | None
    protect: bool
    provider: str | None  # "<provider urn>::<id>" when an explicit provider was given
    custom: bool
    # URNs the engine would create first: explicit depends_on plus those behind Output inputs.
    dependencies: frozenset[str] = frozenset()
    # input name -> URNs whose Outputs fed that input
    property_dependencies: dict[str, frozenset[str]] = field(default_factory=dict)
    arn: str | None = None  # what the mocks answered, as AWS would after creation

    def get(self, path: str, default: Any = None) -> Any:
        """Input by dotted path, e.g. `res.get("versioningConfiguration.status")`, secrets unwrapped."""
        value: Any = self.inputs
        for part in path.split("."):
            value = unwrap(value)
            if isinstance(value, list) and part.isdigit():
                value = value[int(part)]
            elif isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                return default
        return unwrap(value)


@dataclass
class ResourceGraph:
    stack: str
    config: dict[str, Any]
    resources: list[RegisteredResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: SettingsError | None = None

    def of_type(self, type_token: str, *, parent: str | None = None) -> list[RegisteredResource]:
        """Resources of one type; `parent` keeps only the children of that component."""
        return [
            resource
            for resource in self.resources
            if resource.type == type_token and (parent is None or resource.parent_name == parent)
        ]

    def one(self, type_token: str, *, parent: str | None = None) -> RegisteredResource:
        matches = self.of_type(type_token, parent=parent)
        if len(matches) != 1:
            where = f" under {parent}" if parent else ""
            raise LookupError(
                f"expected one {type_token}{where}, found {len(matches)}: {[r.name for r in matches]}"
            )
        return matches[0]

    def named(self, name: str) -> RegisteredResource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise LookupError(f"no resource named {name!r}")

    def children_of(self, name: str) -> list[RegisteredResource]:
        return [resource for resource in self.resources if resource.parent_name == name]

    @property
    def types(self) -> set[str]:
        return {resource.type for resource in self.resources}

    def by_urn(self, urn: str) -> RegisteredResource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise LookupError(f"no resource with urn {urn!r}")

    def dependencies_of(self, resource: RegisteredResource, *, transitive: bool = True) -> set[str]:
        """Names of the resources the engine creates before `resource` (directly, or at any depth)."""
        known = {r.urn: r for r in self.resources}
        seen: set[str] = set()
        pending = list(resource.dependencies)
        while pending:
            urn = pending.pop()
            if urn in seen or urn not in known:
                continue
            seen.add(urn)
            if transitive:
                pending.extend(known[urn].dependencies)
        return {known[urn].name for urn in seen}

    def depends_on(self, resource: RegisteredResource, other: RegisteredResource) -> bool:
        """Whether the engine must finish `other` before it starts `resource` (transitively)."""
        return other.name in self.dependencies_of(resource)


def unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Secret) else value


def iter_plain_strings(value: Any) -> Iterator[str]:
    """Every string in a value that is *not* inside a `Secret` (where a secret may not appear)."""
    if isinstance(value, Secret):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from iter_plain_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_plain_strings(item)


def _stack_directory(stack_dir: str | Path) -> Path:
    directory = Path(stack_dir)
    return directory if directory.is_absolute() else REPO_ROOT / directory


def list_stacks(stack_dir: str | Path = STACK_DIR) -> list[str]:
    """Stack names that have a stacks/Pulumi.<stack>.yaml file."""
    paths = _stack_directory(stack_dir).glob("Pulumi.*.yaml")
    return sorted(path.name.removeprefix("Pulumi.").removesuffix(".yaml") for path in paths)


def stack_backend(stack: str, stack_dir: str | Path = STACK_DIR) -> str:
    """compute.backend a stack file selects: "kubernetes", or "ecs" (the default)."""
    compute = load_stack_config(stack, stack_dir).get(f"{CONFIG_NAMESPACE}:compute") or {}
    return str(compute.get("backend", "ecs")) if isinstance(compute, Mapping) else "ecs"


def stack_mode(stack: str, stack_dir: str | Path = STACK_DIR) -> str:
    """tenancy.mode a stack file selects: "platform", "team", or "standalone" (the default)."""
    tenancy = load_stack_config(stack, stack_dir).get(f"{CONFIG_NAMESPACE}:tenancy") or {}
    return str(tenancy.get("mode", "standalone")) if isinstance(tenancy, Mapping) else "standalone"


def stack_database_placement(stack: str, stack_dir: str | Path = STACK_DIR) -> str:
    """database.placement a stack file selects: "shared" (the platform's instance) or "own-instance"."""
    database = load_stack_config(stack, stack_dir).get(f"{CONFIG_NAMESPACE}:database") or {}
    return str(database.get("placement", "own-instance")) if isinstance(database, Mapping) else "own-instance"


def load_stack_config(stack: str, stack_dir: str | Path = STACK_DIR) -> dict[str, Any]:
    """The `config:` map of stacks/Pulumi.<stack>.yaml, keys fully qualified (`mlflow-stack:x`)."""
    path = _stack_directory(stack_dir) / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path}; stacks here: {', '.join(list_stacks(stack_dir))}")
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    return {_qualify(key): value for key, value in config.items()}


def _qualify(key: str) -> str:
    return key if ":" in key else f"{CONFIG_NAMESPACE}:{key}"


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; a `None` override removes the key."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _runtime_config_value(value: Any) -> str:
    """What the Pulumi engine hands the program: plain text for strings, JSON for everything else."""
    return value if isinstance(value, str) else json.dumps(value)


def _to_graph_value(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return Secret(_to_graph_value(rpc.unwrap_rpc_secret(value)))
    if isinstance(value, Mapping):
        return {key: _to_graph_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_graph_value(item) for item in value]
    # The wire format (protobuf Struct) has only doubles; give whole numbers back as ints.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def run_program(
    stack: str,
    *,
    config_overrides: Mapping[str, Any] | None = None,
    stack_dir: str | Path = STACK_DIR,
    program: Path = PROGRAM,
) -> ResourceGraph:
    """Run the Pulumi program for `stack` under mocks and return everything it registered.

    `config_overrides` use the stack file's keys (`mlflow-stack:database`, `aws:region`, or the short
    `database`); mappings deep-merge into the file's values and `None` removes a key.
    """
    config = load_stack_config(stack, stack_dir)
    if config_overrides:
        config = _merge(config, {_qualify(key): value for key, value in config_overrides.items()})
    graph = ResourceGraph(stack=stack, config=config)
    referenced = referenced_platform_outputs(config, stack_dir, program)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            _run_in_fresh_runtime(graph, program, referenced)
        except BaseException as exc:  # handed back to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"pulumi-offline-{stack}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return graph


def referenced_platform_outputs(
    config: Mapping[str, Any], stack_dir: str | Path = STACK_DIR, program: Path = PROGRAM
) -> dict[str, dict[str, Any]]:
    """A team stack's StackReference resolved offline: the platform stack named by
    tenancy.platformStack (<org>/<project>/<stack>) is built from its own stack file in the same
    directory, under the same mocks, and its outputs are what the reference answers."""
    tenancy = config.get(f"{CONFIG_NAMESPACE}:tenancy")
    if not isinstance(tenancy, Mapping) or tenancy.get("mode") != "team":
        return {}
    reference = tenancy.get("platformStack")
    if not isinstance(reference, str) or "/" not in reference:
        return {}  # the settings report the missing or malformed reference
    platform_stack = reference.rsplit("/", 1)[-1]
    path = _stack_directory(stack_dir) / f"Pulumi.{platform_stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{CONFIG_NAMESPACE}:tenancy.platformStack is {reference}, but there is no stack file {path} "
            f"to preview it from offline — add the platform stack's file (tenancy.mode: platform) or fix "
            f"the reference; stacks here: {', '.join(list_stacks(stack_dir))}"
        )
    platform = run_program(platform_stack, stack_dir=stack_dir, program=program)
    if platform.error is not None:
        raise platform.error
    return {
        reference: {
            key: rpc.wrap_rpc_secret(value.value) if isinstance(value, Secret) else value
            for key, value in platform.outputs.items()
        }
    }


def _run_in_fresh_runtime(
    graph: ResourceGraph, program: Path, stack_outputs: dict[str, dict[str, Any]] | None = None
) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        region = str(graph.config.get("aws:region", "us-east-1"))
        mocks = AwsMocks(graph.stack, region, stack_outputs)
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_all_config({key: _runtime_config_value(v) for key, v in graph.config.items()}, [])
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=graph.stack, preview=False, monitor=monitor)
        # Not set by set_mocks: without these, two runs would share one set of pending outputs.
        runtime_settings.SETTINGS.outputs = set()
        runtime_settings.SETTINGS.lock = threading.Lock()

        observed: dict[tuple[str, str], tuple[pulumi.Resource, pulumi.Resource | None]] = {}

        def observe(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
            observed[(args.type_, args.name)] = (args.resource, args.opts.parent)
            return None  # observe only, change nothing

        pulumi.runtime.register_stack_transformation(observe)

        def run() -> None:
            try:
                runpy.run_path(str(program), run_name="__pulumi_program__")
            except SettingsError as exc:
                graph.error = exc

        loop.run_until_complete(run_pulumi_func(run))
        root = runtime_settings.get_root_resource()
        exports = dict(getattr(root, "outputs", {}))
        graph.outputs = loop.run_until_complete(_resolve_outputs(exports))
        graph.resources = _collect(mocks, monitor, observed)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


async def _resolve_outputs(exports: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, value in exports.items():
        output = pulumi.Output.from_input(value)
        plain = await output.future(with_unknowns=False)
        resolved[name] = Secret(plain) if await output.is_secret() else plain
    return resolved


def _collect(
    mocks: AwsMocks, monitor: RecordingMonitor, observed: dict[tuple[str, str], Any]
) -> list[RegisteredResource]:
    urns = {}
    for urn in monitor.resources:
        qualified_type, name = urn.split("::")[2:4]
        urns[(qualified_type.split("$")[-1], name)] = urn
    resources = []
    for args, resource_id, state in mocks.registrations:
        resource, parent = observed.get((args.typ, args.name), (None, None))
        parent_key = (parent._type, parent._name) if parent is not None else None
        urn = urns.get((args.typ, args.name), "")
        dependencies, property_dependencies = monitor.dependencies.get(urn, (frozenset(), {}))
        resources.append(
            RegisteredResource(
                type=args.typ,
                name=args.name,
                urn=urn,
                id=resource_id or None,
                inputs=_to_graph_value(args.inputs),
                parent_urn=urns.get(parent_key) if parent_key else None,
                parent_name=parent._name if parent is not None else None,
                protect=bool(getattr(resource, "_protect", False)),
                provider=args.provider or None,
                custom=bool(args.custom),
                dependencies=dependencies,
                property_dependencies=property_dependencies,
                arn=_plain(state.get("arn")) if args.custom else None,
            )
        )
    return resources
