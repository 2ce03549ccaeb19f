# The README names two targets: `make demo` and `make test`. Both set up what they need.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit crds image bench clean

setup:
	@scripts/bootstrap.sh

demo: setup
	$(BIN)/objmig demo

lint: setup
	$(BIN)/ruff check operator tests benchmarks scripts
	$(BIN)/ruff format --check operator tests benchmarks scripts
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

crds: setup
	$(BIN)/objmig crds --output crds
	for d in charts/objmig/crds manifests/base/crds; do $(BIN)/objmig crds --output $$d; done

# The container image from the Dockerfile, without a Docker daemon (buildah); prints where the
# OCI archives are. docs/install.md says how to push it.
image:
	@scripts/image.sh

# The whole suite: static checks, then every test against real PostgreSQL, S3 and Kubernetes
# (a control plane with the pod runner, and one with a real node running the image). Each
# script builds its tool once into ~/.cache/objmig (docs/testing-s3-servers.md has the cold
# and warm times and the CI budget). Garage's cold build alone takes most of CI's 90 minutes:
# it is built only with GARAGE=1 (otherwise its tests skip, also under CI=true).
test: setup
	scripts/k8s-tools.sh
	scripts/minio.sh
	scripts/helm.sh
	scripts/node-runtime.sh
	scripts/image.sh
	scripts/versitygw.sh
	scripts/seaweedfs.sh
	if [ "$${GARAGE:-}" = 1 ]; then scripts/garage.sh; fi
	$(MAKE) lint typecheck
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
