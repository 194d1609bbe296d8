"""Drive the policy pack the way the Pulumi engine does, without the Pulumi CLI.

The pack runs as its own process (`python -m pulumi.policy <engine> <pack dir>`, the command the
engine's Python analyzer plugin runs), prints its gRPC port on the first line of stdout, and is
then called over the analyzer protocol: GetAnalyzerInfo, Configure (policy config with schema
defaults filled in, as the CLI does), ConfigureStack, Analyze for every resource (its inputs) and
AnalyzeStack once with the whole graph (outputs). The diagnostics are the pack's own.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

# The pack itself: policies/ next to this package (PulumiPolicy.yaml, __main__.py, rules/).
PACK_DIR = Path(__file__).resolve().parent.parent / "policies"
START_TIMEOUT_SECONDS = 30.0
# Same limit the engine and the pack's server use: a whole stack travels in one AnalyzeStack call.
_MAX_MESSAGE = 1024 * 1024 * 400
_LEVEL_NAMES = {
    analyzer_pb2.ADVISORY: "advisory",
    analyzer_pb2.MANDATORY: "mandatory",
    analyzer_pb2.REMEDIATE: "remediate",
    analyzer_pb2.DISABLED: "disabled",
}
_LEVELS = {name: value for value, name in _LEVEL_NAMES.items()}


class PolicyPackError(RuntimeError):
    """The pack could not be started or configured."""


@dataclass(frozen=True)
class ProviderRef:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]


@dataclass(frozen=True)
class AnalyzedResource:
    type: str
    name: str
    urn: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    parent: str | None = None
    protect: bool = False
    provider: ProviderRef | None = None
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnostic:
    policy: str
    level: str
    message: str
    urn: str
    description: str

    @property
    def mandatory(self) -> bool:
        return self.level == "mandatory"


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    description: str
    level: str
    scope: str


def to_wire(value: Any) -> Any:
    """Property values as the engine would send them: JSON-shaped (protobuf Struct)."""
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(to_wire(values))
    return message


def _provider_message(provider: ProviderRef | None) -> analyzer_pb2.AnalyzerProviderResource | None:
    if provider is None:
        return None
    return analyzer_pb2.AnalyzerProviderResource(
        type=provider.type, name=provider.name, urn=provider.urn, properties=_struct(provider.props)
    )


def _options(resource: AnalyzedResource) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(protect=resource.protect, parent=resource.parent or "")


class PolicyPackProcess:
    """The pack's analyzer server in a subprocess; use as a context manager (stops it by PID)."""

    def __init__(
        self,
        *,
        project: str,
        stack: str,
        stack_config: Mapping[str, str] | None = None,
        pack_dir: Path = PACK_DIR,
        python: str = sys.executable,
    ) -> None:
        self.project = project
        self.stack = stack
        self.stack_config = dict(stack_config or {})
        self.pack_dir = pack_dir
        self.python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_file: IO[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self.stub: analyzer_pb2_grpc.AnalyzerStub | None = None

    def __enter__(self) -> PolicyPackProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        env = dict(os.environ)
        # What the engine hands an analyzer plugin: the stack's identity and config.
        env.update(
            PULUMI_PROJECT=self.project,
            PULUMI_STACK=self.stack,
            PULUMI_DRY_RUN="true",
            PULUMI_CONFIG=json.dumps(self.stack_config),
        )
        # No engine is listening: the pack never calls back, it only needs an address argument.
        command = [self.python, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(self.pack_dir)]
        # stderr goes to a file: a chatty pack can never fill a pipe nobody reads and stall.
        self._stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in stop()
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr_file, env=env)
        port = self._read_port()
        self._channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        try:
            grpc.channel_ready_future(self._channel).result(timeout=START_TIMEOUT_SECONDS)
        except grpc.FutureTimeoutError:
            self.stop()
            raise PolicyPackError(f"policy pack on port {port} did not accept a connection") from None
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._process.stdout], [], [], max(remaining, 0))
            if not ready:
                self.stop()
                raise PolicyPackError(
                    f"policy pack in {self.pack_dir} printed no port within {START_TIMEOUT_SECONDS}s"
                )
            chunk = os.read(self._process.stdout.fileno(), 64)
            if not chunk:
                stderr = self._stderr()
                self.stop()
                raise PolicyPackError(f"policy pack in {self.pack_dir} exited before serving:\n{stderr}")
            line += chunk
        try:
            return int(line.strip())
        except ValueError:
            self.stop()
            raise PolicyPackError(f"policy pack printed {line!r} instead of its port") from None

    def _stderr(self) -> str:
        assert self._process is not None and self._stderr_file is not None
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode(errors="replace")

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    # --- the analyzer protocol -------------------------------------------------------------

    def _require_stub(self) -> analyzer_pb2_grpc.AnalyzerStub:
        if self.stub is None:
            raise PolicyPackError("policy pack is not running")
        return self.stub

    def policies(self) -> list[PolicyInfo]:
        info = self._require_stub().GetAnalyzerInfo(empty_pb2.Empty())
        return [
            PolicyInfo(
                name=p.name,
                description=p.description,
                level=_LEVEL_NAMES[p.enforcementLevel],
                scope="stack" if p.policy_type == analyzer_pb2.POLICY_TYPE_STACK else "resource",
            )
            for p in info.policies
        ]

    def configure(
        self, pack_config: Mapping[str, Any] | None = None, stack_tags: Mapping[str, str] | None = None
    ) -> None:
        """Send policy config the way the CLI does: every policy, schema defaults + user values.

        `pack_config` has the `--policy-pack-config` file's shape: policy name -> enforcement
        level string, or an object with an optional `enforcementLevel` and properties.
        """
        stub = self._require_stub()
        info = stub.GetAnalyzerInfo(empty_pb2.Empty())
        known = {p.name for p in info.policies}
        unknown = sorted(set(pack_config or {}) - known - {"all"})
        if unknown:
            raise PolicyPackError(f"policy config names unknown policies {unknown}; known: {sorted(known)}")
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        problems: list[str] = []
        for policy in info.policies:
            schema = json_format.MessageToDict(policy.configSchema.properties)
            given = (pack_config or {}).get(policy.name)
            if isinstance(given, Mapping):
                problems += config_problems(policy.name, given, schema)
            properties = {
                k: v["default"] for k, v in schema.items() if isinstance(v, dict) and "default" in v
            }
            level = policy.enforcementLevel
            for key in ("all", policy.name):
                given = (pack_config or {}).get(key)
                if isinstance(given, str):
                    level = self._level(given, key)
                elif isinstance(given, Mapping):
                    for k, v in given.items():
                        if k == "enforcementLevel":
                            level = self._level(v, key)
                        elif key == policy.name:
                            properties[k] = v
            request.policyConfig[policy.name].CopyFrom(
                analyzer_pb2.PolicyConfig(enforcementLevel=level, properties=_struct(properties))
            )
        if problems:
            raise PolicyPackError("policy config is invalid:\n  " + "\n  ".join(problems))
        stub.Configure(request)
        stub.ConfigureStack(
            analyzer_pb2.AnalyzerStackConfigureRequest(
                stack=self.stack,
                project=self.project,
                dry_run=True,
                config=self.stack_config,
                tags=dict(stack_tags or {}),
            )
        )

    @staticmethod
    def _level(value: object, key: str) -> int:
        if value not in _LEVELS:
            raise PolicyPackError(
                f"policy config {key}: enforcement level {value!r} is not one of {sorted(_LEVELS)}"
            )
        return _LEVELS[str(value)]

    def analyze(self, resources: Sequence[AnalyzedResource]) -> list[Diagnostic]:
        stub = self._require_stub()
        diagnostics: list[Diagnostic] = []
        for resource in resources:
            response = stub.Analyze(
                analyzer_pb2.AnalyzeRequest(
                    type=resource.type,
                    properties=_struct(resource.inputs),
                    urn=resource.urn,
                    name=resource.name,
                    options=_options(resource),
                    provider=_provider_message(resource.provider),
                )
            )
            diagnostics.extend(self._diagnostics(response.diagnostics, resource.urn))
        stack_response = stub.AnalyzeStack(
            analyzer_pb2.AnalyzeStackRequest(
                resources=[
                    analyzer_pb2.AnalyzerResource(
                        type=r.type,
                        properties=_struct(r.outputs),
                        urn=r.urn,
                        name=r.name,
                        options=_options(r),
                        provider=_provider_message(r.provider),
                        parent=r.parent or "",
                        dependencies=list(r.dependencies),
                        propertyDependencies={
                            k: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(v))
                            for k, v in r.property_dependencies.items()
                        },
                    )
                    for r in resources
                ]
            )
        )
        diagnostics.extend(self._diagnostics(stack_response.diagnostics, ""))
        return diagnostics

    @staticmethod
    def _diagnostics(found: Iterable[analyzer_pb2.AnalyzeDiagnostic], default_urn: str) -> list[Diagnostic]:
        return [
            Diagnostic(
                policy=d.policyName,
                level=_LEVEL_NAMES.get(d.enforcementLevel, "advisory"),
                # The SDK prefixes the policy description; keep only what was found.
                message=d.message.removeprefix(d.description).strip() or d.description,
                urn=d.urn or default_urn,
                description=d.description,
            )
            for d in found
        ]


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}


def _type_ok(value: Any, expected: str | None) -> bool:
    if expected is None:
        return True
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    if expected == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(expected, (object,)))


def config_problems(policy: str, given: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Check a policy's configured properties against its schema, as the Pulumi CLI does before
    configuring a pack (the keywords this pack's schemas use: type, items, enum, minimum, maximum),
    and refuse unknown property names, which would otherwise be silently ignored."""
    problems = []
    for key, value in given.items():
        if key == "enforcementLevel":
            continue
        prop = schema.get(key)
        where = f"{policy}.{key}"
        if not isinstance(prop, Mapping):
            problems.append(
                f"{where}: not a setting of this policy (settings: {', '.join(sorted(schema)) or 'none'})"
            )
            continue
        if not _type_ok(value, prop.get("type")):
            problems.append(f"{where}: {value!r} is not of type {prop.get('type')}")
            continue
        items = prop["items"].get("type") if isinstance(prop.get("items"), Mapping) else None
        if isinstance(value, list | tuple) and not all(_type_ok(v, items) for v in value):
            problems.append(f"{where}: every item must be of type {items}")
        if "enum" in prop and value not in prop["enum"]:
            problems.append(f"{where}: {value!r} is not one of {prop['enum']}")
        if "minimum" in prop and isinstance(value, int | float) and value < prop["minimum"]:
            problems.append(f"{where}: {value!r} is below the minimum {prop['minimum']}")
        if "maximum" in prop and isinstance(value, int | float) and value > prop["maximum"]:
            problems.append(f"{where}: {value!r} is above the maximum {prop['maximum']}")
    return problems


def run_policy_pack(
    resources: Sequence[AnalyzedResource],
    *,
    project: str,
    stack: str,
    stack_config: Mapping[str, str] | None = None,
    pack_config: Mapping[str, Any] | None = None,
    stack_tags: Mapping[str, str] | None = None,
) -> list[Diagnostic]:
    with PolicyPackProcess(project=project, stack=stack, stack_config=stack_config) as pack:
        pack.configure(pack_config, stack_tags)
        return pack.analyze(resources)
