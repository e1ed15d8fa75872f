# pktagent: `make run` captures live, `make demo` replays sample traffic, `make test` runs everything.
SYSTEM_PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 10464
# Debian packages the tests use: promtool and a real Prometheus, tcpreplay and iproute2 for live
# capture in network namespaces, tshark as the reference decoder, tcpdump and softflowd as peers,
# htpasswd (apache2-utils) for the README's bcrypt hint.
# The bundle tests (make test-dist) build Debian roots with debootstrap, run arm64 ones with qemu-user-static
# and boot one with systemd-nspawn (systemd-container); shellcheck checks the bundle's install.sh.
APT_PACKAGES := prometheus tcpreplay tshark tcpdump softflowd iproute2 util-linux libcap2-bin systemd python3-venv apache2-utils shellcheck \
                debootstrap qemu-user-static systemd-container

# make bundle PLATFORM=linux_aarch64|linux_x86_64 [PYTHON=3.11|3.12|3.13]: the offline install bundle in $(DIST)/.
PLATFORM ?= linux_$(shell uname -m)
PYTHON   ?= 3.11
DIST     ?= dist
VERSION  := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' agent/__init__.py)
BUNDLE   := $(DIST)/pktagent-$(VERSION)-$(PLATFORM)$(if $(filter-out 3.11,$(PYTHON)),-py$(PYTHON)).tar.gz
# Rebuilt when the package, the bundle's files, the role's unit or the commit change (the revision is baked in).
BUNDLE_SOURCES := pyproject.toml README.md $(shell find agent bundle -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -not -name _build.json) \
                  ansible/roles/pktagent/templates/pktagent.service.j2 ansible/roles/pktagent/defaults/main.yml \
                  $(wildcard $(shell git rev-parse --git-path logs/HEAD 2>/dev/null))

.PHONY: run demo test test-fast test-dist bundle lint typecheck bench bench-live bench-cost fuzz soak clean system-deps

$(BIN)/pktagent: pyproject.toml
	@test -x $(BIN)/python || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(BIN)/pktagent
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(BIN)/pktagent
	$(BIN)/pktagent run --web.listen-address 0.0.0.0:$(PORT)

demo: $(BIN)/pktagent
	@test -f build/demo/home.pcap || $(BIN)/python bench/home.py --out build/demo/home.pcap
	$(BIN)/pktagent run --config bench/demo.yml --pcap build/demo/home.pcap --loop --web.listen-address 127.0.0.1:$(PORT)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run make test as root, or apt-get install them)"; exit 1; \
	  fi; \
	fi

lint: $(VENV)/.dev
	$(BIN)/ruff check agent tests bench grafana bundle
	$(BIN)/ruff format --check agent tests bench grafana bundle

typecheck: $(VENV)/.dev
	$(BIN)/mypy

test: system-deps $(VENV)/.dev lint typecheck
	CI=$${CI:-} $(BIN)/python -m pytest -q

bundle: $(BUNDLE)

$(BUNDLE): $(BUNDLE_SOURCES) | $(VENV)/.dev
	$(BIN)/python bundle/build.py --platform $(PLATFORM) --python $(PYTHON) --out $(DIST)

# Slow (minutes): the aarch64 bundle installed offline in a Debian arm64 root under qemu, and the
# bundle's unit under a booted systemd. Roots are cached in /var/cache/pktagent-test-roots.
test-dist: system-deps $(VENV)/.dev
	CI=$${CI:-} $(BIN)/python -m pytest -q -m dist tests/dist

# The edit loop: ruff and the tests that need no real services, namespaces or corpora (about a minute).
test-fast: $(VENV)/.dev
	$(BIN)/ruff check agent tests bench grafana
	$(BIN)/python -m pytest -q -m "not slow and not dist" -p no:cacheprovider

bench: $(BIN)/pktagent system-deps
	$(BIN)/python bench/run.py

bench-live: $(BIN)/pktagent system-deps
	$(BIN)/python bench/live.py

# CPU seconds per million packets and peak RSS, live, against softflowd and tcpdump (root).
bench-cost: $(BIN)/pktagent system-deps
	$(BIN)/python bench/cost.py

# Long runs beyond `make test`: FUZZ_SECONDS of random frames; SOAK_SECONDS of live traffic at SOAK_PPS (root).
fuzz: $(VENV)/.dev
	$(BIN)/python bench/fuzz.py --seconds $${FUZZ_SECONDS:-600}

soak: $(BIN)/pktagent system-deps
	$(BIN)/python bench/soak.py --seconds $${SOAK_SECONDS:-600} --pps $${SOAK_PPS:-50000}

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
