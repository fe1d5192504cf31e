#!/bin/bash
# Builds the Debian package from this tree with debhelper (contrib/debian/ becomes debian/ in a
# copy of the tree, so the checkout itself stays clean):
#   contrib/package.sh [--version V] [--out DIR]
# writes DIR/dohgate_V_<arch>.deb (and its -dbgsym .ddeb). V defaults to the version in
# CMakeLists.txt, DIR to build-deb/. Installs what the build needs from Debian first (as root or
# with sudo; nothing when it is all there). Check it with `lintian DIR/dohgate_V_<arch>.deb`.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
version=""
out=$top/build-deb
while [ $# -gt 0 ]; do
    case "$1" in
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    *) echo "usage: $0 [--version V] [--out DIR]" >&2; exit 2 ;;
    esac
done
[ -n "$version" ] ||
    version=$(sed -n 's/^project(dohgate VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
# A native package: no Debian revision (a '-' would make dpkg-source want an upstream tarball).
case "$version" in
*-* | "" | [!0-9]*) echo "package.sh: version '$version' must start with a digit and hold no '-'" >&2; exit 2 ;;
esac

contrib/deps.sh --package

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/dohgate-$version
mkdir -p "$src"
# The tree as it is (committed or not), without build directories or git's own files.
if git rev-parse --git-dir >/dev/null 2>&1; then
    # (a tracked file deleted in the checkout is left out, not an error)
    git ls-files -z --cached --others --exclude-standard | grep -zv '^build' |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"
    rev=$(git rev-parse --short HEAD)
else
    tar --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$src"
    rev="no git"
fi
[ -f "$src/CMakeLists.txt" ] && [ -d "$src/src" ] || { echo "package.sh: copying the tree failed" >&2; exit 1; }
cp -r contrib/debian "$src/debian"
cat >"$src/debian/changelog" <<CHANGES
dohgate ($version) unstable; urgency=medium

  * Built from the source tree by contrib/package.sh ($rev).

 -- $(sed -n 's/^Maintainer: //p' contrib/debian/control)  $(date -R)
CHANGES

(cd "$src" && dpkg-buildpackage -b -us -uc -j"$(nproc)") >"$work/build.log" 2>&1 || {
    tail -40 "$work/build.log" >&2
    echo "package.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
mkdir -p "$out"
arch=$(dpkg --print-architecture)
mv "$work/dohgate_${version}_$arch.deb" "$out/"
mv "$work"/dohgate-dbgsym_"${version}"_"$arch".*deb "$out/" 2>/dev/null || true
echo "$out/dohgate_${version}_$arch.deb"
