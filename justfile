# FTGO's developer tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where infra/install.sh caches the infrastructure binaries (and links them into ./bin).
export FTGO_CACHE := env_var_or_default("FTGO_CACHE", env_var("HOME") / ".cache/ftgo")
export PATH := FTGO_CACHE / "bin" + ":" + env_var("PATH")

# List the tasks.
default:
    @just --list --unsorted

# Install (or find) Postgres, NATS, Consul, Fabio, etcd, the Kubernetes node, containerd, CoreDNS, umoci, kubectl, helm, just.
infra:
    infra/install.sh

# Run every test against real servers (installs what is missing first).
test: infra
    cargo test --workspace --locked

# Build every crate.
build:
    cargo build --workspace --locked

# Everything runs on this machine in the foreground: infrastructure, every service, the gateway
# on http://127.0.0.1:8080. Ctrl-C, or `just down` from another terminal, stops it all.
#
# `just up release` runs optimised builds instead (what a benchmark measures); `just up --replicas 2`
# runs two instances of every back-end service behind Fabio (kill one: the system carries on).
#
# Build and run FTGO locally (the API on http://127.0.0.1:8080); `just up release`, `just up --replicas 2`.
up *args: infra
    #!/usr/bin/env bash
    set -euo pipefail
    profile=debug
    pass=()
    for arg in {{args}}; do
        case "$arg" in
            release) profile=release ;;
            debug) ;;
            *) pass+=("$arg") ;;
        esac
    done
    echo "building the services ($profile; the first build takes a few minutes) ..."
    if [ "$profile" = release ]; then cargo build --locked --bins --release; else cargo build --locked --bins; fi
    exec "target/$profile/ftgo-local" up "${pass[@]}"

# Walk orders through the running system (`just up` in another terminal first).
demo:
    cargo run --locked --quiet -p ftgo-local -- demo

# Stop what `just up` started, from another terminal.
down:
    cargo run --locked --quiet -p ftgo-local -- down

# The whole system under load through its public API (direct and through Fabio) next to the
# Postgres-only floor (the saga's own transactions without the services) and an RPC floor, at 1, 16
# and 64 clients, with release builds, on a durable Postgres and then with the tests' fast settings:
# sagas/s, p50/p90/p99, CPU per saga for every process, commits per saga, ratios to the floor; a
# table, and JSON in target/bench.json. Not part of `just test` (CI runs a 2-second smoke of it).
# `just bench --seconds 30` makes each leg longer; `just bench --postgres fast` runs one setting.
#
# Measure the system under load (release builds).
bench *args: infra
    cargo build --locked --release --bins
    target/release/ftgo-bench --out target/bench.json {{args}}

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

# A real one-node Kubernetes cluster on this machine (kubelet, containerd, kube-proxy, CoreDNS),
# contained in namespaces of its own, with FTGO's images loaded; in the foreground. It forwards
# http://127.0.0.1:8080 to Fabio's NodePort and prints the `export KUBECONFIG=...` line. Runs as root.
#
# Run a one-node Kubernetes cluster with FTGO's images loaded (Ctrl-C or `just cluster-down` stops it).
cluster-up: infra
    @echo "building the binaries (the first build takes a few minutes) ..."
    cargo build --locked --bins
    target/debug/ftgo-cluster up

# Stop what `just cluster-up` started, from another terminal.
cluster-down:
    cargo run --locked --quiet -p ftgo-local --bin ftgo-cluster -- down

# The workspace binaries the cluster runs and the Managed infrastructure's (Postgres, NATS, Consul,
# Fabio), as OCI archives in ~/.cache/ftgo/images; `just cluster-up` builds and imports them itself.
#
# Build every image without a Docker daemon (umoci).
images: infra
    cargo build --locked --bins
    target/debug/ftgo-cluster images

# Build every image with Docker instead, from the Dockerfile (same names, tags and contract): one
# per binary that the service catalog ships as an image (`ftgo-local images` lists them).
docker-images tag="0.1.0":
    cargo build --locked -p ftgo-local
    for bin in $(target/debug/ftgo-local images); do docker build --build-arg BIN=$bin -t ghcr.io/ftgo-rs/$bin:{{tag}} .; done

# The same images and manifests as `just cluster-up`, on a kind cluster: the archives `just images`
# builds are loaded with `kind load image-archive`, then the operator by its Helm chart and
# examples/ftgo-system-local.yaml. The API ends up on http://127.0.0.1:8080. Needs Docker and kind.
#
# Run FTGO in a kind cluster (needs Docker and kind).
kind-up: images
    kind create cluster --config kind-config.yaml
    for archive in ~/.cache/ftgo/images/*.tar; do kind load image-archive --name ftgo "$archive"; done
    helm upgrade --install ftgo-operator charts/ftgo-operator --namespace ftgo-system --create-namespace --wait
    kubectl create namespace ftgo --dry-run=client -o yaml | kubectl apply -f -
    kubectl apply -f examples/ftgo-system-local.yaml
    kubectl wait --for=condition=Ready ftgo/shop -n ftgo --timeout=10m
    @echo "FTGO runs in kind: http://127.0.0.1:8080/api/openapi.json"

# Delete the kind cluster.
kind-down:
    kind delete cluster --name ftgo
