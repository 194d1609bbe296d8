"""No secret value ever appears outside a Pulumi secret: not in a resource input, not in an output.

The offline mocks make every random password (and the ECR login token) start with SECRET_SENTINEL;
the scan below looks for it in every string of every resource input and stack output.
"""

from __future__ import annotations

import pytest

from infra.secrets import ADMIN_PASSWORD_SPECIALS, DB_PASSWORD_SPECIALS
from preview.offline import (
    SECRET_SENTINEL,
    Secret,
    iter_plain_strings,
    list_stacks,
    stack_backend,
    stack_mode,
    unwrap,
)

STACK_FILES = list_stacks()
# Stacks that hold secrets: a platform stack (tenancy.mode platform) has none to check.
SECRET_STACKS = [s for s in STACK_FILES if stack_mode(s) != "platform"]
GENERATOR_TYPE = "random:index/randomPassword:RandomPassword"


def _contains_sentinel(value) -> bool:
    if isinstance(value, Secret):
        return _contains_sentinel(value.value)
    if isinstance(value, str):
        return SECRET_SENTINEL in value
    if isinstance(value, dict):
        return any(_contains_sentinel(k) or _contains_sentinel(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_sentinel(item) for item in value)
    return False


@pytest.mark.parametrize("stack", STACK_FILES)
def test_no_secret_in_any_plain_resource_input(stack_graph, stack):
    graph = stack_graph(stack)
    leaks = [
        (resource.name, text[:80])
        for resource in graph.resources
        if resource.type != GENERATOR_TYPE
        for text in iter_plain_strings(resource.inputs)
        if SECRET_SENTINEL in text
    ]
    assert not leaks


@pytest.mark.parametrize("stack", STACK_FILES)
def test_no_secret_in_any_stack_output(stack_graph, stack):
    outputs = stack_graph(stack).outputs
    assert outputs
    leaked = [name for name, value in outputs.items() if _contains_sentinel(value)]
    assert not leaked


@pytest.mark.parametrize("stack", SECRET_STACKS)
def test_secrets_reach_only_secrets_manager(stack_graph, stack):
    """The scan is not vacuous: the sentinel is there, wrapped as a secret, exactly where it belongs —
    and nowhere else, not even the RDS instance (RDS manages its master password itself)."""
    graph = stack_graph(stack)
    versions = graph.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    secrets_component = graph.one("mlflow-stack:secrets:Secrets").name
    ours = [v for v in versions if v.parent_name == secrets_component]
    # DB application role and admin passwords, Flask key, MLflow's KEK passphrase and webhook key.
    assert len(ours) == 5
    for version in ours:
        assert isinstance(version.inputs["secretString"], Secret)
        assert unwrap(version.inputs["secretString"]).startswith(SECRET_SENTINEL)
    # None in a team stack on the platform's shared instance (the platform's is checked there).
    for instance in graph.of_type("aws:rds/instance:Instance"):
        assert "password" not in instance.inputs and instance.get("manageMasterUserPassword") is True
    holders = {r.name for r in graph.resources if r.type != GENERATOR_TYPE and _contains_sentinel(r.inputs)}
    # Besides the secret versions, only the image build holds a (mocked) secret: ECR's short-lived
    # registry token, which the docker provider needs to push.
    images = {r.name for r in graph.of_type("docker-build:index:Image")}
    # A Kubernetes stack's provider holds its kubeconfig (a Pulumi secret from the stack config).
    providers = {r.name for r in graph.of_type("pulumi:providers:kubernetes")}
    assert holders - images - providers == {v.name for v in ours}


@pytest.mark.parametrize("stack", SECRET_STACKS)
def test_secrets_are_encrypted_with_their_own_key(stack_graph, stack):
    graph = stack_graph(stack)
    secrets_component = graph.one("mlflow-stack:secrets:Secrets").name
    key = graph.one("aws:kms/key:Key", parent=secrets_component)
    secrets = graph.of_type("aws:secretsmanager/secret:Secret", parent=secrets_component)
    # Name prefixes (the provider appends a unique suffix, see infra/secrets.py).
    assert sorted(s.get("namePrefix").rsplit("/", 1)[-1].removesuffix("-") for s in secrets) == [
        "admin-password",
        "crypto-kek-passphrase",
        "db-password",
        "flask-secret-key",
        "webhook-encryption-key",
    ]
    for secret in secrets:
        assert secret.get("kmsKeyId").endswith(f"key/{key.id}")
        assert secret.get("namePrefix").startswith(f"mlflow-stack/{stack}/")


def test_generated_passwords_are_strong(stack_graph):
    graph = stack_graph("prod")
    by_role = {r.name.rsplit("-secrets-", 1)[-1]: r for r in graph.of_type(GENERATOR_TYPE)}
    admin, db, flask_key = by_role["admin-password"], by_role["db-password"], by_role["flask-secret-key"]
    assert admin.get("length") >= 12
    for password in (admin, db):
        assert password.get("special") is True
        for minimum in ("minUpper", "minLower", "minNumeric", "minSpecial"):
            assert password.get(minimum) >= 1, (password.name, minimum)
    # The Flask key is shared by every replica and only needs entropy: 64 alphanumerics.
    assert flask_key.get("length") >= 64
    assert admin.get("overrideSpecial") == ADMIN_PASSWORD_SPECIALS
    assert db.get("overrideSpecial") == DB_PASSWORD_SPECIALS


def test_password_character_sets_survive_urls_headers_and_rds():
    # basic-auth splits user:password at the first ':'; URLs treat '@', '/', '#', '?', '%' specially;
    # a shell or env file mangles quotes, '$', '`' and '\\'.
    for char in ":@/#?% \t\"'`$\\":
        assert char not in ADMIN_PASSWORD_SPECIALS, char
    # RDS refuses '/', '@', '"' and spaces in the master password.
    for char in '/@" ':
        assert char not in DB_PASSWORD_SPECIALS, char


@pytest.mark.parametrize("stack", SECRET_STACKS)
def test_mlflow_encryption_keys_are_generated_stored_and_read_only_by_the_server_execution_role(
    stack_graph, stack
):
    """MLflow's KEK passphrase and webhook key: generated per stack (never MLflow's defaults),
    a Secrets Manager secret with a version each, and readable by the server's execution role only."""
    graph = stack_graph(stack)
    keys = ("crypto_kek_passphrase_secret_arn", "webhook_encryption_key_secret_arn")
    arns = {graph.outputs[key] for key in keys}
    generators = {r.name for r in graph.of_type(GENERATOR_TYPE)}
    assert any(name.endswith("-crypto-kek-passphrase") for name in generators)
    assert any(name.endswith("-webhook-encryption-key") for name in generators)
    readers = [
        role_policy.name
        for role_policy in graph.of_type("aws:iam/rolePolicy:RolePolicy")
        if any(arn in str(role_policy.inputs.get("policy")) for arn in arns)
    ]
    # ECS: the server's execution role injects them. Kubernetes: External Secrets' reader role
    # (or, with the CSI driver, the server pods' own role) fetches them into the cluster.
    reader_suffix = (
        "-execution-policy"
        if stack_backend(stack) == "ecs"
        else ("-mlflow-secrets-policy", "-mlflow-server-policy")
    )
    assert readers and all(name.endswith(reader_suffix) for name in readers), readers
    assert not any("maint" in name or "operations" in name for name in readers), readers


def test_the_generated_webhook_key_is_always_a_fernet_key():
    """RandomPassword over the url-safe alphabet, 43 characters, plus '=' (infra/secrets.py): every
    such string is a key cryptography's Fernet accepts — the extremes and random draws alike."""
    import secrets as stdlib_secrets
    import string

    from cryptography.fernet import Fernet

    from infra.secrets import FERNET_ALPHABET_SPECIALS, FERNET_KEY_CHARACTERS

    alphabet = string.ascii_letters + string.digits + FERNET_ALPHABET_SPECIALS
    assert len(set(alphabet)) == 64  # every character carries 6 bits
    samples = [c * FERNET_KEY_CHARACTERS for c in alphabet]
    for _ in range(200):
        samples.append("".join(stdlib_secrets.choice(alphabet) for _ in range(FERNET_KEY_CHARACTERS)))
    for body in samples:
        token = Fernet(body + "=").encrypt(b"webhook secret")
        assert Fernet(body + "=").decrypt(token) == b"webhook secret"
