#!/usr/bin/env bash
# Build kube-apiserver and kubectl from the Go module proxy, once per machine, into a cache
# outside the clone. Prints the cache directory on stdout; progress goes to stderr.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the k8s.io/* staging modules
# with local paths, and replace directives of a dependency are ignored. So we write a small
# module of our own that requires k8s.io/kubernetes at KUBE_VERSION and pins each staging module
# (the list is read from k8s.io/kubernetes's own go.mod) to the matching v0.Y.Z, then build the
# two commands from it. Only the binaries are kept.
#
#   KUBE_VERSION   the release (default below; >= 1.30 so CRD CEL rules are enforced)
#   CANARY_CACHE   cache root (default ~/.cache/canary-analyzer)
set -euo pipefail

version="${KUBE_VERSION:-1.36.3}"
cache_root="${CANARY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canary-analyzer}"
dest="$cache_root/kube-$version"
binaries=(kube-apiserver kubectl)

have_all() {
  for b in "${binaries[@]}"; do [ -x "$dest/$b" ] || return 1; done
}

mkdir -p "$cache_root"
if have_all; then echo "$dest"; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  echo "kube-build: the go command is missing (Go >= 1.26 is needed to build kube-apiserver" \
       "$version from the Go module proxy)" >&2
  exit 1
fi

exec 9>"$cache_root/kube-$version.lock"
if ! flock -n 9; then
  echo "kube-build: another build of kube-$version is running; waiting for it ..." >&2
  flock 9
fi
if have_all; then echo "$dest"; exit 0; fi

work="$(mktemp -d "$cache_root/kube-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
minor="${version#*.}"   # 36.3
staging_version="v0.$minor"
start=$SECONDS

echo "kube-build: building kube-apiserver and kubectl $version from Go modules into $dest" >&2
echo "kube-build: the first build takes 10-20 min on 2 cores (~1 GB of memory); later runs reuse it" >&2
echo "kube-build: [1/4] fetching k8s.io/kubernetes v$version ..." >&2
modfile="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$version" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
if [ -z "$modfile" ] || [ ! -f "$modfile" ]; then
  echo "kube-build: could not download k8s.io/kubernetes v$version from $(go env GOPROXY)" >&2
  exit 1
fi
mapfile -t staging < <(sed -n 's/^[[:space:]]*\(k8s\.io\/[^[:space:]]*\) => \.\/staging\/.*/\1/p' "$modfile")
if [ "${#staging[@]}" -eq 0 ]; then
  echo "kube-build: found no staging replace directives in $modfile" >&2
  exit 1
fi
go_line="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"

{
  echo "module canary-analyzer.demo/kube-build"
  echo
  echo "go ${go_line:-1.26}"
  echo
  echo "require k8s.io/kubernetes v$version"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
  echo ")"
} >"$work/go.mod"

echo "kube-build: [2/4] resolving ${#staging[@]} staging modules at $staging_version ..." >&2
(cd "$work" && go get "k8s.io/kubernetes/cmd/kube-apiserver@v$version" \
                      "k8s.io/kubernetes/cmd/kubectl@v$version" >&2)

mkdir -p "$work/bin"
# The release's version stamp, as the upstream build writes it (kubectl version, /version).
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=v$version -X $pkg.gitTreeState=clean"
  ldflags="$ldflags -X $pkg.gitMajor=${version%%.*} -X $pkg.gitMinor=${minor%%.*}"
done
n=3
for b in "${binaries[@]}"; do
  echo "kube-build: [$n/4] go build $b (elapsed $((SECONDS - start)) s) ..." >&2
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "bin/$b" \
     "k8s.io/kubernetes/cmd/$b")
  n=$((n + 1))
done

mkdir -p "$dest"
for b in "${binaries[@]}"; do mv "$work/bin/$b" "$dest/$b.tmp" && mv "$dest/$b.tmp" "$dest/$b"; done
echo "kube-build: done in $((SECONDS - start)) s: $dest" >&2
echo "$dest"
