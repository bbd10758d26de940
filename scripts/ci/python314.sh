#!/usr/bin/env bash
# python314.sh: a CPython 3.14 for the PEP 768 loader's tests (internal/inject/pep768*_test.go).
# Prints the interpreter's path on its last line; .ci/run exports it as PM_PYTHON314.
#
# Everything comes from Debian's archive (the only place CI can download from), verified from
# the signed sid InRelease down: InRelease (gpgv, debian-archive-keyring) -> Sources.xz /
# Packages.xz (SHA256 listed in InRelease) -> each file (SHA256 listed in Sources / Packages).
#
#  1. Source (preferred): python3.14_<v>.orig.tar.xz from pool/main/p/python3.14, built with
#     `./configure --prefix=$CACHE/python3.14 && make -j2 && make install` under nice (no PGO/LTO).
#  2. Binary (fallback, used when the mirror does not serve the source tarball: the workplace's
#     Debian mirror answers 404 for every python3.x source file while serving the binaries): sid's
#     python3.14-minimal + libpython3.14-{minimal,stdlib} and the libraries they need (glibc,
#     libffi for ctypes, zlib, expat, OpenSSL, ...), unpacked with dpkg-deb under the cache;
#     sid's interpreter needs a newer glibc than the host's (GLIBC_2.38 vs bookworm's 2.36), so
#     patchelf points it at the unpacked ld.so with a DT_RPATH (inherited by the extension
#     modules it dlopens, unlike DT_RUNPATH) into the unpacked libraries. The interpreter is an
#     ordinary process: /proc/PID/exe is python3.14 and _PyRuntime sits in its .PyRuntime section.
#
# Time (2-core workplace machine, shared, measured): binary path 7-8 s cold (downloads ~25 MB,
# the sid package index being 11 MB of it), 0.1 s with the cache. The source path could not be run
# here (no source tarball is served); expect several minutes for `make -j2` of a non-PGO build.
#
# Cache: ${PM_CACHE:-$HOME/.cache/profilemate}/python3.14 (reused when its stamp file exists and
# the interpreter runs; delete the directory to rebuild). PM_PY314_MODE=source|binary forces one
# path; PM_DEBIAN_MIRROR overrides http://deb.debian.org/debian.
set -euo pipefail

CACHE=${PM_CACHE:-$HOME/.cache/profilemate}
DEST=$CACHE/python3.14
STAMP=$DEST/.pm-python314
MIRROR=${PM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
MODE=${PM_PY314_MODE:-auto}
log() { echo "python314: $*" >&2; }

if [[ -f $STAMP ]]; then
  py=$(cat "$STAMP")
  if [[ -x $py ]] && "$py" -c 'import sys, ctypes; assert sys.version_info[:2] == (3, 14)' 2>/dev/null; then
    log "cached: $py"
    echo "$py"
    exit 0
  fi
  log "cache at $DEST is broken; rebuilding"
  rm -rf "$DEST"
fi

need=()
for t in curl:curl xz:xz-utils gpgv:gpgv patchelf:patchelf dpkg-deb:dpkg sha256sum:coreutils; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
if [[ $MODE != binary ]]; then
  for p in gcc make libffi-dev zlib1g-dev libssl-dev; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
fi
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pm-py314-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

# fetch URL OUT: 0 on success, 2 when the server says 404 (not served), 1 otherwise.
fetch() {
  local code
  code=$(curl -sS -L --retry 3 -o "$2" -w '%{http_code}' "$1") || return 1
  [[ $code == 200 ]] && return 0
  [[ $code == 404 ]] && return 2
  log "GET $1: HTTP $code"
  return 1
}
# sha256_of_index INDEX_FILE NAME: the SHA256 the InRelease file lists for NAME.
inrelease_sha() { awk -v n="$2" '/^SHA256:/{s=1;next} /^[^ ]/{s=0} s&&$3==n{print $1; exit}' "$1"; }
check() { # check FILE SHA256
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [[ -n $2 && $got == "$2" ]] || { log "checksum mismatch for $1: got $got, want ${2:-<none>}"; exit 1; }
}

fetch "$MIRROR/dists/sid/InRelease" "$WORK/InRelease"
gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg "$WORK/InRelease" 2>"$WORK/gpgv.log" ||
  { cat "$WORK/gpgv.log" >&2; log "sid InRelease signature does not verify"; exit 1; }

build_from_source() {
  # Runs in an `||` context (set -e is off here): every step returns on failure.
  fetch "$MIRROR/dists/sid/main/source/Sources.xz" "$WORK/Sources.xz" || return 1
  check "$WORK/Sources.xz" "$(inrelease_sha "$WORK/InRelease" main/source/Sources.xz)"
  # Newest python3.14 stanza: version, orig tarball name and its SHA256.
  read -r ver orig sha < <(xz -dc "$WORK/Sources.xz" | awk '
    /^Package: /{p=($2=="python3.14")} p&&/^Version: /{v=$2}
    p&&/^Checksums-Sha256:/{c=1;next} c&&/^[^ ]/{c=0}
    p&&c&&$3~/\.orig\.tar\.xz$/{print v, $3, $1}' | sort -V | tail -1)
  [[ -n ${orig:-} ]] || { log "no python3.14 source package in sid"; return 1; }
  log "source $orig (Debian $ver)"
  local rc=0
  fetch "$MIRROR/pool/main/p/python3.14/$orig" "$WORK/$orig" || rc=$?
  ((rc == 0)) || return $rc
  check "$WORK/$orig" "$sha"
  tar -C "$WORK" -xf "$WORK/$orig" || return 1
  local src
  src=$(find "$WORK" -maxdepth 1 -type d -name 'Python-3.14*' | head -1)
  (cd "$src" && nice ./configure -q --prefix="$DEST" >&2 && nice make -s -j2 >&2 && nice make -s install >&2) || return 1
  echo "$DEST/bin/python3.14" >"$STAMP"
}

install_binaries() {
  local arch triplet ldso
  arch=$(dpkg --print-architecture)
  case $arch in
    amd64) triplet=x86_64-linux-gnu ldso=ld-linux-x86-64.so.2 ;;
    arm64) triplet=aarch64-linux-gnu ldso=ld-linux-aarch64.so.1 ;;
    *) log "no binary path for $arch"; exit 1 ;;
  esac
  fetch "$MIRROR/dists/sid/main/binary-$arch/Packages.xz" "$WORK/Packages.xz"
  check "$WORK/Packages.xz" "$(inrelease_sha "$WORK/InRelease" "main/binary-$arch/Packages.xz")"
  xz -dc "$WORK/Packages.xz" >"$WORK/Packages"
  mkdir -p "$DEST"
  local pkg fn sha
  for pkg in python3.14-minimal libpython3.14-minimal libpython3.14-stdlib libc6 libffi8 \
    libexpat1 zlib1g libssl3t64 libzstd1 liblzma5 libbz2-1.0 libmpdec4; do
    read -r fn sha < <(awk -v p="$pkg" '/^Package: /{m=($2==p)} m&&/^Filename: /{f=$2} m&&/^SHA256: /{print f, $2; exit}' "$WORK/Packages")
    [[ -n ${fn:-} ]] || { log "package $pkg not in sid"; exit 1; }
    fetch "$MIRROR/$fn" "$WORK/pkg.deb"
    check "$WORK/pkg.deb" "$sha"
    dpkg-deb -x "$WORK/pkg.deb" "$DEST"
    log "unpacked ${fn##*/}"
  done
  local lib=$DEST/usr/lib/$triplet py=$DEST/usr/bin/python3.14
  patchelf --set-interpreter "$lib/$ldso" --force-rpath --set-rpath "$lib" "$py"
  echo "$py" >"$STAMP"
}

case $MODE in
  source) build_from_source || { log "no python3.14 built from source (the tarball is not served, or the build failed)"; exit 1; } ;;
  binary) install_binaries ;;
  auto)
    rc=0
    build_from_source || rc=$?
    if ((rc == 2)); then
      log "the mirror does not serve the python3.14 source tarball; using sid's binary packages"
      install_binaries
    elif ((rc != 0)); then
      exit $rc
    fi
    ;;
  *) log "PM_PY314_MODE must be source, binary or auto"; exit 1 ;;
esac

py=$(cat "$STAMP")
"$py" -c 'import sys, ctypes, threading; assert sys.version_info[:2] == (3, 14); print(sys.version)' >&2 ||
  { log "$py does not run"; rm -f "$STAMP"; exit 1; }
log "ready in $((SECONDS - start)) s"
echo "$py"
