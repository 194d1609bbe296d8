# What the README tells people to run. Everything installs from the lock file into .venv.
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(VENV)-tools/bin/uv
endif
RUN := $(VENV)/bin

.PHONY: install up down status smoke test test-unit test-integration test-upgrade test-large-artifact lint lock bench image docs

# uv itself is bootstrapped from PyPI into a private tools venv when it is not installed.
$(VENV)-tools/bin/uv:
	$(PYTHON) -m venv $(VENV)-tools
	$(VENV)-tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --quiet
	touch $@

# The Kubernetes manifest scanner (checkov) has a lock of its own: it pins boto3 to a version the
# kit's lock cannot share. tests/unit/test_kubernetes_manifests.py runs it from here.
SCAN_VENV := $(CURDIR)/.venv-scan
$(SCAN_VENV)/.synced: .ci/manifest-scan/pyproject.toml .ci/manifest-scan/uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(SCAN_VENV) $(UV) sync --locked --quiet --project .ci/manifest-scan
	touch $@

install: $(VENV)/.synced $(SCAN_VENV)/.synced

## up: start the local stack (PostgreSQL, S3 emulator, 2 MLflow replicas, Caddy TLS) and smoke it
up: install
	$(RUN)/mlflow-stack local up
	$(RUN)/mlflow-stack smoke --local

down: install
	$(RUN)/mlflow-stack local down

status: install
	$(RUN)/mlflow-stack local status

smoke: install
	$(RUN)/mlflow-stack smoke --local

## test: build the docs, lint, then every test (unit, policies, integration on a fresh local stack);
## the suite's runs go in three lanes side by side, the upgrade tests included (tests/run_layers.py)
test: install docs lint
	$(RUN)/python tests/run_layers.py

test-unit: install
	$(RUN)/pytest tests/unit tests/policies

test-integration: install
	$(RUN)/pytest tests/integration

## test-upgrade: MLflow 2.22.5 and 3.1.4 installed from PyPI into throwaway environments, filled by
## their own server and client, then upgraded by N kit replicas at once (minutes; `make test` runs it too)
test-upgrade: install
	$(RUN)/pytest tests/upgrade

## test-large-artifact: a 2100 MiB (>= 2 GB) artifact up and down through the local stack's TLS load
## balancer by the MLflow client, the replicas' memory checked; CI runs it as its own job (15 min
## here, most of it the S3 emulator returning the object; `make test` runs it with 256 MiB)
test-large-artifact: install
	MLFLOW_STACK_LARGE_ARTIFACT_MIB=2100 MLFLOW_STACK_LARGE_ARTIFACT_CLIENT_TIMEOUT=3600 \
		$(RUN)/pytest tests/reliability/test_reliability_large_artifact.py

## docs: the documentation site into site/ (strict: a broken link, anchor or missing page fails);
## the settings, policy and command references are generated from the code at build time
docs: install
	NO_MKDOCS_2_WARNING=1 $(RUN)/mkdocs build --strict

## lint: ruff, and actionlint over .github/workflows/ (it also runs shellcheck on `run:` scripts when
## shellcheck is on PATH)
lint: install
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .
	$(RUN)/actionlint

## bench: load benchmarks (mixed traffic; authenticated writes as a user and as the admin; the kit vs
## stock MLflow, same run) and cleanup benchmark -> bench/RESULTS.md
bench: install
	$(RUN)/python -m bench.bench_load
	$(RUN)/python -m bench.bench_writes
	$(RUN)/python -m bench.bench_cleanup

## image: build server/Dockerfile for linux/arm64, push it to ECR and print the stack's server.image
## (REGION=us-east-1, IMAGE_ARGS="--dry-run --account-id 123456789012" to only print the recipe)
image: install
	$(RUN)/mlflow-stack image build $(if $(REGION),--region $(REGION)) $(IMAGE_ARGS)

## lock: re-resolve dependencies and re-export the server image's pinned requirements
lock: | $(UV)
	$(UV) lock
	$(UV) lock --project .ci/manifest-scan
	$(UV) export --frozen --only-group server --no-emit-project --no-header -o server/requirements.txt
