# Astara: `make run` starts it, `make test` runs the whole suite. Both install
# what they need first (Debian packages as root, and a .venv with pinned deps).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE_DIR ?= var
PYTEST_ARGS ?=

# Real parts only: the appliance and the tests use these, never stand-ins.
APT_PACKAGES := iproute2 nftables dnsmasq-base radvd busybox dhcpcd-base iputils-ping \
	iputils-arping conntrack tcpdump socat iperf3 procps psmisc python3-venv \
	postgresql util-linux strace etcd-server redis-server haproxy curl wrk \
	keepalived conntrackd

.PHONY: deps apt run test lint bench clean

deps: apt $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Astara runs keepalived and conntrackd inside appliances only: the
	@# packages' own services (conntrackd ships a config) stay off.
	@if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
		systemctl disable --now -q keepalived conntrackd 2>/dev/null || true; \
	fi

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

run: deps
	$(BIN)/astara serve --state-dir $(STATE_DIR)

test: deps
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
