#!/usr/bin/env bash
# Gather real font files for the glyph dataset from the package registries.
#
#   bash data/fonts/get_fonts.sh [OUT_DIR]        (default: ./fontcache)
#
# Reads sources.txt (next to this script): "deb <package> <version>" lines are
# fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is
# installed system-wide); "npm <package> <version>" lines (@fontsource/*) are
# fetched with `npm pack` and untarred. Only font files (.ttf .otf .woff .woff2)
# are kept, one format per font name, under OUT_DIR/files/{deb,npm}/<package>/,
# next to the package's licence (Debian: copyright, npm: LICENSE + package.json)
# and a SOURCE/VERSION pair. For @fontsource only the 'latin' subset is kept, one file per
# weight/style (.woff preferred, .woff2 otherwise). Then make_manifest.py
# writes OUT_DIR/manifest.json. Packages that could not be fetched are listed
# in OUT_DIR/failed.txt. Re-running skips packages already unpacked.
# Needs apt-get (run `apt-get update` once first), dpkg-deb, npm, tar, python3.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-./fontcache}")
JOBS=${JOBS:-4}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT/downloads/deb" "$OUT/downloads/npm" "$OUT/files/deb" "$OUT/files/npm"
: > "$OUT/failed.txt"
export OUT

prune_formats() {  # $1 = folder: keep one format per font name (.ttf > .otf > .woff > .woff2)
  local f stem ext better
  while IFS= read -r -d '' f; do
    stem=$(basename "${f%.*}"); ext=${f##*.}
    for better in ttf otf woff; do
      [[ ${ext,,} == "$better" ]] && break
      if [[ -n $(find "$1" -type f -iname "$stem.$better" -print -quit) ]]; then rm "$f"; break; fi
    done
  done < <(find "$1" -type f \( -iname '*.otf' -o -iname '*.woff' -o -iname '*.woff2' \) -print0)
}

fetch_deb() {  # $1 = package, $2 = version
  local pkg=$1 ver=$2 dest="$OUT/files/deb/$1" tmp deb
  [[ -f $dest/VERSION && $(cat "$dest/VERSION") == "$ver" ]] && return 0
  cd "$OUT/downloads/deb"
  # The pinned version first; the archive's current one if it has moved on.
  if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
    apt-get download -q "$pkg=$ver" >/dev/null 2>&1 || apt-get download -q "$pkg" >/dev/null 2>&1 \
      || { echo "deb $pkg $ver" >> "$OUT/failed.txt"; return 0; }
  fi
  deb=$(ls "${pkg}"_*.deb | head -n1)
  ver=$(dpkg-deb -f "$deb" Version)
  tmp=$(mktemp -d); dpkg-deb -x "$deb" "$tmp"
  rm -rf "$dest"; mkdir -p "$dest"
  # Font files only (symlinks skipped), keeping their paths inside the package.
  (cd "$tmp" && find . -type f \( -iname '*.ttf' -o -iname '*.otf' -o -iname '*.woff' -o -iname '*.woff2' \) \
     -printf '%P\0' | xargs -0 -r cp --parents -t "$dest")
  prune_formats "$dest"  # some packages ship the same font as .ttf/.otf and web .woff/.woff2
  # Licence; a doc folder may be a symlink to a sibling package's (name kept in copyright.link).
  if [[ -f $tmp/usr/share/doc/$pkg/copyright ]]; then cp "$tmp/usr/share/doc/$pkg/copyright" "$dest/copyright"
  elif [[ -L $tmp/usr/share/doc/$pkg ]]; then basename "$(readlink "$tmp/usr/share/doc/$pkg")" > "$dest/copyright.link"
  fi
  echo "debian:$pkg" > "$dest/SOURCE"; echo "$ver" > "$dest/VERSION"
  rm -rf "$tmp"
}

fetch_npm() {  # $1 = package (@fontsource/<family>), $2 = version
  local pkg=$1 ver=$2 name tgz tmp f dest
  name=${pkg#@}; name=${name//\//-}; dest="$OUT/files/npm/$name"
  [[ -f $dest/VERSION && $(cat "$dest/VERSION") == "$ver" ]] && return 0
  cd "$OUT/downloads/npm"
  tgz=$(npm pack --silent "$pkg@$ver" 2>/dev/null | tail -n1) && [[ -f $tgz ]] \
    || { echo "npm $pkg $ver" >> "$OUT/failed.txt"; return 0; }
  tmp=$(mktemp -d); tar -xzf "$tgz" -C "$tmp"
  rm -rf "$dest"; mkdir -p "$dest/files"
  # 'latin' subset only (not latin-ext): <family>-latin-<weight>-<normal|italic>.woff[2]
  for f in "$tmp"/package/files/*-latin-[0-9]*-*.woff2; do
    [[ -f $f ]] || continue
    if [[ -f ${f%2} ]]; then cp "${f%2}" "$dest/files/"; else cp "$f" "$dest/files/"; fi
  done
  cp "$tmp/package/LICENSE" "$dest/LICENSE" 2>/dev/null || true
  cp "$tmp/package/package.json" "$dest/package.json"
  echo "npm:$pkg" > "$dest/SOURCE"; echo "$ver" > "$dest/VERSION"
  rm -rf "$tmp"
}
export -f prune_formats fetch_deb fetch_npm

start=$(date +%s)
grep -E '^deb ' "$HERE/sources.txt" | awk '{print $2, $3}' | xargs -P "$JOBS" -n 2 bash -c 'fetch_deb "$0" "$1"'
grep -E '^npm ' "$HERE/sources.txt" | awk '{print $2, $3}' | xargs -P "$JOBS" -n 2 bash -c 'fetch_npm "$0" "$1"'
echo "fetched in $(( $(date +%s) - start )) s; failed: $(wc -l < "$OUT/failed.txt")"
"$PYTHON" "$HERE/make_manifest.py" "$OUT"
