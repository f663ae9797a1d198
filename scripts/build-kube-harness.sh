#!/bin/sh
# Build the lab's Kubernetes harness (core/kube-harness: etcd, kube-apiserver, kube-controller-manager,
# kube-proxy and kubectl in one multi-call binary) into .cache/kube-harness/<key>/cniscope-kube and
# print the binary's path on stdout. The key hashes go.mod, go.sum, the harness sources and the Go
# version, so the binary is rebuilt only when one of those changes; otherwise this is a no-op.
# GOMODCACHE/GOCACHE stay at Go's defaults, so a rebuild after a version change is incremental.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF="$ROOT/scripts/$(basename "$0")"
SRC="$ROOT/core/kube-harness"
CACHE="$ROOT/.cache/kube-harness"

# --if-go: without a Go toolchain say so and succeed (make test: the harness tests then skip, and
# fail under CI=true); otherwise a missing toolchain is an error.
IF_GO=0
[ "${1:-}" = "--if-go" ] && IF_GO=1

GO=${GO:-}
if [ -z "$GO" ]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go)
    elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
    else
        echo "build-kube-harness: no Go toolchain (PATH or /usr/local/go/bin/go)" >&2
        [ $IF_GO = 1 ] && exit 0
        exit 1
    fi
fi

GOVERSION=$("$GO" env GOVERSION)
KEY=$(cd "$SRC" && { cat go.mod go.sum; cat $(ls *.go | sort); echo "$GOVERSION"; cat "$SELF"; } | sha256sum | cut -c1-16)
OUT="$CACHE/$KEY/cniscope-kube"

if [ -x "$OUT" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE"
# One build at a time (make and a test may ask together); the loser finds the binary built.
exec 9>"$CACHE/.lock"
flock 9
if [ -x "$OUT" ]; then
    echo "$OUT"
    exit 0
fi

# The version the components report (/version, kubectl version, kube-proxy's build info), set the
# way Kubernetes' own build does (hack/lib/version.sh), from the pinned k8s.io/kubernetes version.
KVER=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$SRC/go.mod")
MAJOR=$(echo "$KVER" | sed -E 's/^v([0-9]+)\..*/\1/')
MINOR=$(echo "$KVER" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDFLAGS="$LDFLAGS -X $pkg.gitVersion=$KVER -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
done

mkdir -p "$CACHE/$KEY"
echo "build-kube-harness: building Kubernetes $KVER components with $GOVERSION into $OUT (minutes on a fresh machine)" >&2
start=$(date +%s)
(cd "$SRC" && CGO_ENABLED=0 "$GO" build -mod=readonly -trimpath -ldflags="$LDFLAGS" -o "$OUT.tmp" .)
mv "$OUT.tmp" "$OUT"
echo "build-kube-harness: built in $(( $(date +%s) - start )) s, $(du -h "$OUT" | cut -f1)" >&2
# Binaries of other keys are stale: keep only this one.
for d in "$CACHE"/*/; do
    [ "$d" = "$CACHE/$KEY/" ] || rm -rf "$d"
done
echo "$OUT"
