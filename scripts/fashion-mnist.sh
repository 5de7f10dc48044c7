#!/usr/bin/env bash
# Obtain Fashion-MNIST where this machine can, for the tests and `--benchmark split-fashion`:
#   scripts/fashion-mnist.sh DEST      (`make fashion-mnist` passes forgetless's per-user cache)
# It comes from the Debian package dataset-fashion-mnist. Installed system-wide already: nothing to do.
# Else, without root: `apt-get download` + `dpkg-deb -x`, and the four files go into DEST, where
# forgetless looks (<cache>/fashion-mnist); as root, one `apt-get update` first if the download fails
# (a fresh machine's package lists may be empty). forgetless checks the files' sha256 when it loads them.
# Never fails the set-up: where it cannot, it says so and what to run, and the Fashion-MNIST tests skip.
set -u
dest=${1:?usage: scripts/fashion-mnist.sh DEST}
package=dataset-fashion-mnist
system=/usr/share/datasets/fashion-mnist
if [ -d "$system" ] || [ -f "$dest/t10k-labels-idx1-ubyte.gz" ]; then
    exit 0
fi
cannot() {
    echo "note: Fashion-MNIST not obtained ($1); its tests will skip. Get it with \`sudo apt-get install $package\`," \
         "or pass --data-dir DIR with its four IDX files"
    exit 0
}
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || cannot "no apt-get or dpkg-deb on this machine"
work=$(mktemp -d) || cannot "no temporary folder"
trap 'rm -rf "$work"' EXIT
fetch() { (cd "$work" && apt-get download -qq "$package" >/dev/null 2>&1); }
if ! fetch; then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && fetch || cannot "apt-get download $package failed"
fi
dpkg-deb -x "$work"/"$package"_*.deb "$work/unpacked" || cannot "dpkg-deb could not unpack the package"
# into a new folder, then renamed: an interrupted copy never looks like a complete one
mkdir -p "$(dirname "$dest")" && rm -rf "$dest.partial" \
    && cp -R "$work/unpacked$system" "$dest.partial" && rm -rf "$dest" && mv "$dest.partial" "$dest" \
    || cannot "could not write $dest"
echo "Fashion-MNIST (Debian package $package) unpacked into $dest"
