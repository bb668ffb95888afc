# FTGO's developer tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where infra/install.sh caches the infrastructure binaries (and links them into ./bin).
export FTGO_CACHE := env_var_or_default("FTGO_CACHE", env_var("HOME") / ".cache/ftgo")
export PATH := FTGO_CACHE / "bin" + ":" + env_var("PATH")

# List the tasks.
default:
    @just --list --unsorted

# Install (or find) Postgres, NATS, Consul, Fabio, etcd, kube-apiserver, kubectl, helm, just.
infra:
    infra/install.sh

# Run every test against real servers (installs what is missing first).
test: infra
    cargo test --workspace --locked

# Build every crate.
build:
    cargo build --workspace --locked

# Build and run FTGO locally in the foreground: infrastructure, every service, the gateway on
# http://127.0.0.1:8080 (Ctrl-C, or `just down` from another terminal, stops it all).
up: infra
    @echo "building the services (the first build takes a few minutes) ..."
    cargo build --locked --bins
    target/debug/ftgo-local up

# Walk orders through the running system (`just up` in another terminal first).
demo:
    cargo run --locked --quiet -p ftgo-local -- demo

# Stop what `just up` started, from another terminal.
down:
    cargo run --locked --quiet -p ftgo-local -- down

# Format the code.
fmt:
    cargo fmt --all

# What CI checks besides the tests: formatting and clippy.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Regenerate the CRD YAML in crds/ (and the Helm chart's copy) from the operator's Rust types.
crds:
    cargo run --locked --quiet -p ftgo-operator --bin crdgen > crds/ftgosystem.yaml
    cp crds/ftgosystem.yaml charts/ftgo-operator/crds/ftgosystem.yaml

# A local Kubernetes control plane (etcd + kube-apiserver, no kubelet) with Postgres, NATS,
# Consul and Fabio, the CRD installed and the operator running against it, in the foreground.
cluster-up: infra
    cargo build --locked --quiet -p ftgo-operator --bins
    cargo run --locked --quiet -p ftgo-operator --bin ftgo-cluster -- up

# Stop what `just cluster-up` started, from another terminal.
cluster-down:
    cargo run --locked --quiet -p ftgo-operator --bin ftgo-cluster -- down
