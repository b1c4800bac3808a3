#!/usr/bin/env bash
# Build the outside tools the deploy checks and `make chaos` need (kustomize, kubeconform,
# toxiproxy's server) once, into a cache
# shared by every clone on this machine; print the directory holding them. Idempotent: a tool
# already built at the pinned version is not rebuilt. promtool comes from Debian's `prometheus`
# package, unpacked (not installed); axe-core (the console's accessibility checker), the
# AsyncAPI 3.0.0 JSON Schema and squawk (the PostgreSQL migration linter) from npm's registry,
# each tarball checked against a pinned checksum.
set -euo pipefail
KUSTOMIZE_VERSION=v5.8.1
KUBECONFORM_VERSION=v0.8.0
TOXIPROXY_VERSION=v2.5.0
AXE_CORE_VERSION=4.14.1
# sha256 of axe-core-4.14.1.tgz; its sha512 matched the registry's `dist.integrity` when pinned.
AXE_CORE_SHA256=e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745
ASYNCAPI_SPECS_VERSION=6.11.1
# sha256 of specs-6.11.1.tgz; its sha512 matched the registry's `dist.integrity` when pinned.
ASYNCAPI_SPECS_SHA256=01af8744dc33c0c7eb2e908f6a955319ee58b70ecadc9387d1aeb16c0cd28928
SQUAWK_VERSION=2.66.0
# sha256 of @squawk-cli/linux-x64-2.66.0.tgz; its sha512 matched the registry's `dist.integrity` when pinned.
SQUAWK_SHA256=29a97bb145dbfd3868b04e7155f8d6773dfa81cb6f5e82530960539e55f4fa3a
TOOLS="${LOTLENS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lotlens-tools}"
export PATH="/usr/local/go/bin:$PATH"
mkdir -p "$TOOLS"

build() {  # build <name> <module path> <version> [<binary go installs>]: lands in $TOOLS/<name>-<version>
  local name=$1 module=$2 version=$3 installed=${4:-$1}
  local target="$TOOLS/$name-$version"
  if [ ! -x "$target" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go is needed to build $name" >&2; exit 1; }
    local tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" CGO_ENABLED=0 go install "$module@$version" >&2
    mv "$tmp/$installed" "$target"
    rmdir "$tmp"
  fi
  ln -sf "$target" "$TOOLS/$name"
}

# `ss` (Debian's iproute2): the chaos harness reads each proxied connection's bytes with it
# (chaos/traffic.py), and tests/chaos/test_network_traffic.py runs in `make test`.
if ! command -v ss >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >&2 ||
      { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >&2; }
  else
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >&2
  fi
fi

# First, so the alert tests have it even where Go is missing: promtool alone, into $TOOLS. The
# machine's own if it has one; else unpacked from Debian's `prometheus` package, never installed:
# its postinst enables and starts a Prometheus server on :9090 on a systemd host (and it was
# root's apt-get install, on the developer's machine, for one binary).
if [ ! -x "$TOOLS/promtool" ]; then
  if command -v promtool >/dev/null; then
    ln -sf "$(command -v promtool)" "$TOOLS/promtool"
  else
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
    deb=$(mktemp -d)
    trap 'rm -rf "$deb"' EXIT
    # Run as root, apt downloads as its own user (_apt): that user, not everyone, may write there
    # (a world-writable directory let another local user plant the package we unpack).
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$deb"; fi
    download() { (cd "$deb" && apt-get download -qq prometheus >&2); }
    download || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && download; }
    dpkg-deb -x "$deb"/prometheus_*.deb "$deb/root"
    mv "$deb/root/usr/bin/promtool" "$TOOLS/promtool.tmp" && mv "$TOOLS/promtool.tmp" "$TOOLS/promtool"
    rm -rf "$deb"
  fi
fi

npm_file() {  # npm_file <tarball URL> <sha256> <file in it> <cached name> <link name>: one file of an npm package
  local url=$1 sha256=$2 member=$3 cached="$TOOLS/$4" link="$TOOLS/$5"
  if [ ! -s "$cached" ]; then
    local tmp
    tmp=$(mktemp -d)
    # Python's standard library, not curl: a fresh Debian image need not have curl. Three tries,
    # each given up after 60 s without a byte (a stalled connection hung for good).
    if ! python3 - "$url" "$tmp/package.tgz" <<'FETCH' || ! echo "$sha256  $tmp/package.tgz" | sha256sum --check --quiet - >&2; then
import shutil, sys, time, urllib.request
for attempt in range(3):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=60) as answer, open(sys.argv[2], "wb") as out:
            shutil.copyfileobj(answer, out)
        break
    except OSError as exc:
        if attempt == 2:
            sys.exit(f"tools.sh: {sys.argv[1]}: {exc}")
        time.sleep(2 * (attempt + 1))
FETCH
      rm -rf "$tmp"
      echo "tools.sh: could not fetch $url with the pinned checksum" >&2
      exit 1
    fi
    tar -xzf "$tmp/package.tgz" -C "$tmp" "$member"
    # Through a name of this run's own in the cache: a rename there is atomic, a copy across
    # filesystems is not, and a concurrent run could take half a file for the tool.
    mv "$tmp/$member" "$cached.$$" && mv "$cached.$$" "$cached"
    rm -rf "$tmp"
  fi
  ln -sf "$cached" "$link"
}

# Before the Go tools, so the tests that need them have them even where Go is missing. Deque's
# axe-core (npm `axe-core`, github.com/dequelabs/axe-core): only its browser bundle, which the
# console's tests inject into the page; no node or npm at test time.
npm_file "https://registry.npmjs.org/axe-core/-/axe-core-$AXE_CORE_VERSION.tgz" "$AXE_CORE_SHA256" \
  package/axe.min.js "axe-core-$AXE_CORE_VERSION.min.js" axe.min.js
# The AsyncAPI Initiative's JSON Schema of AsyncAPI 3.0.0 (npm `@asyncapi/specs`,
# github.com/asyncapi/spec-json-schemas), which docs/asyncapi.json is held to.
npm_file "https://registry.npmjs.org/@asyncapi/specs/-/specs-$ASYNCAPI_SPECS_VERSION.tgz" "$ASYNCAPI_SPECS_SHA256" \
  'package/schemas/3.0.0-without-$id.json' "asyncapi-3.0.0-$ASYNCAPI_SPECS_VERSION.json" asyncapi-3.0.0.json
# sbdchd/squawk's linter (npm `squawk-cli` ships it as `@squawk-cli/<platform>`): only the static
# x86-64 Linux binary, which tests/integration/test_migration_lint.py runs on every migration's SQL.
# Elsewhere the test skips saying so.
if [ "$(uname -sm)" = "Linux x86_64" ]; then
  npm_file "https://registry.npmjs.org/@squawk-cli/linux-x64/-/linux-x64-$SQUAWK_VERSION.tgz" "$SQUAWK_SHA256" \
    package/bin/squawk "squawk-$SQUAWK_VERSION" squawk
fi

build kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
build kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
build toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server "$TOXIPROXY_VERSION" server
echo "$TOOLS"
