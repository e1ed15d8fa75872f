# pktagent: `make run` captures live, `make demo` replays sample traffic, `make test` runs everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 10464
# Debian packages the tests use: promtool and a real Prometheus, tcpreplay and iproute2 for live
# capture in network namespaces, tshark as the reference decoder, tcpdump and softflowd as peers,
# htpasswd (apache2-utils) for the README's bcrypt hint.
APT_PACKAGES := prometheus tcpreplay tshark tcpdump softflowd iproute2 util-linux libcap2-bin systemd python3-venv apache2-utils

.PHONY: run demo test lint typecheck bench bench-live fuzz soak clean system-deps

$(BIN)/pktagent: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
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
	$(BIN)/ruff check agent tests bench grafana
	$(BIN)/ruff format --check agent tests bench grafana

typecheck: $(VENV)/.dev
	$(BIN)/mypy

test: system-deps $(VENV)/.dev lint typecheck
	CI=$${CI:-} $(BIN)/python -m pytest -q

bench: $(BIN)/pktagent system-deps
	$(BIN)/python bench/run.py

bench-live: $(BIN)/pktagent system-deps
	$(BIN)/python bench/live.py

# Long runs beyond `make test`: FUZZ_SECONDS of random frames; SOAK_SECONDS of live traffic at SOAK_PPS (root).
fuzz: $(VENV)/.dev
	$(BIN)/python bench/fuzz.py --seconds $${FUZZ_SECONDS:-600}

soak: $(BIN)/pktagent system-deps
	$(BIN)/python bench/soak.py --seconds $${SOAK_SECONDS:-600} --pps $${SOAK_PPS:-50000}

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
