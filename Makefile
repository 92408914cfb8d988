# Strata's entry points. Every target installs what it needs first (scripts/setup.sh).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source scripts/env.sh &&

DEMO_ROUNDS ?= 6
DEMO_OUT ?= runs/demo

.PHONY: setup build build-arm64 test-arm64 demo test lint run-local clean-cache validate-deploy

setup:
	@scripts/setup.sh

build: setup
	@$(ENV) cargo build --release -p strata-cli && mkdir -p target/release && cp -f "$$CARGO_TARGET_DIR/release/strata" target/release/strata
	@echo "built target/release/strata"

# `strata` for arm64 edge clients, cross-compiled here against PyPI's aarch64 libtorch (CPU
# only): leaves target/aarch64-unknown-linux-gnu/release/strata. See scripts/build-arm64.sh.
build-arm64:
	@scripts/build-arm64.sh

# The arm64 binary under qemu-user as a client of an x86-64 server, two rounds (minutes; not
# part of `make test`). See scripts/test-arm64.sh.
test-arm64: build build-arm64
	@scripts/test-arm64.sh

# The README's run command: 20 simulated clients on PFLlib's Dirichlet(0.1) split of Fashion-MNIST.
demo: build
	target/release/strata simulate --dataset fmnist --clients 20 \
	  --split file:bench/fmnist-dir0.1-20clients-pfllib.json \
	  --method fedavg --model cnn --rounds $(DEMO_ROUNDS) --seed 1 --out $(DEMO_OUT)

# The README's test command (CI runs it through .ci/run).
test: setup
	@log=$$(mktemp); $(ENV) scripts/check-layers.sh; \
	$(ENV) cargo test --workspace 2>&1 | tee "$$log"; \
	$(ENV) cargo check --quiet --manifest-path fuzz/Cargo.toml --all-targets; \
	$(ENV) cargo build -p strata-cli && STRATA_BIN="$$CARGO_TARGET_DIR/debug/strata" scripts/run-local.sh --quick; \
	STRATA_BIN="$$CARGO_TARGET_DIR/debug/strata" scripts/validate-deploy.sh; \
	passed=$$(grep -oE '^test result: ok\. [0-9]+ passed' "$$log" | awk '{s += $$4} END {print s + 3}'); \
	rm -f "$$log"; echo; echo "tests: $$passed passed, 0 failed"

# The deployment files (Dockerfile, compose, Kubernetes, systemd), validated without running
# them; also the last step of `make test`.
validate-deploy:
	@scripts/validate-deploy.sh

lint: setup
	@$(ENV) cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings
