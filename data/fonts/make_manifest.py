"""Write <cache>/manifest.json for the fonts gathered by get_fonts.sh.

    python data/fonts/make_manifest.py [CACHE_DIR]     (default: ./fontcache)

One record per font file under CACHE_DIR/files/{deb,npm}/<package>/:
path (relative to CACHE_DIR/files), source ("debian:<pkg>" / "npm:<pkg>"),
version, license (short name, best effort, "unknown" if unclear), sha256,
and weight_from_filename / italic_from_filename (from @fontsource file
names such as roboto-slab-latin-700-italic.woff; null for Debian files).
Bitmap-only files (no outlines; Pillow cannot open them) are left out.
Standard library only.
"""
import hashlib
import json
import re
import sys
from pathlib import Path

FONT_EXT = {".ttf", ".otf", ".woff", ".woff2"}
FONTSOURCE_NAME = re.compile(r"-latin-(\d+)-(normal|italic)\.woff2?$")

# Licence names as written in Debian copyright files -> one short spelling.
ALIASES = {
    "ofl": "OFL-1.1", "ofl-1.1": "OFL-1.1", "sil-ofl-1.1": "OFL-1.1", "ofl-1.1-rfn": "OFL-1.1",
    "ofl-1.1-no-rfn": "OFL-1.1", "ofl1.1": "OFL-1.1", "silofl-1.1": "OFL-1.1", "ofl-1": "OFL-1.0",
    "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0", "apache 2.0": "Apache-2.0",
    "lppl": "LPPL", "lppl-1.3c": "LPPL-1.3c", "gfl": "GUST-Font-License", "gust-font-license": "GUST-Font-License",
    "sil-1.1": "OFL-1.1", "sil": "OFL-1.1", "sil open font license": "OFL-1.1",
    "bitstream-vera": "Bitstream-Vera", "bitstream vera": "Bitstream-Vera",
    "bitstream-vera-copyright": "Bitstream-Vera", "bitstream-vera-fonts-copyright": "Bitstream-Vera",
    "gpl-2+fe": "GPL-2+ with font exception", "bsd3": "BSD-3-Clause", "bsd-3-clause": "BSD-3-Clause",
}
# Full-text clues for copyright files that are not machine-readable.
CLUES = [
    (r"SIL Open Font License|\bOFL\b", "OFL-1.1"),
    (r"Apache License", "Apache-2.0"),
    (r"GUST Font License", "GUST-Font-License"),
    (r"LaTeX Project Public License", "LPPL"),
    (r"Bitstream Vera", "Bitstream-Vera"),
    (r"GNU\s+General\s+Public\s+License", "GPL"),
    (r"[Pp]ublic\s+[Dd]omain", "public-domain"),
    (r"Permission is hereby granted, free of charge", "MIT"),
    (r"to copy, modify,? and distribute", "permissive (see copyright)"),
]


def has_outlines(path: Path) -> bool:
    """False for bitmap-only sfnt files (no or an empty glyf/CFF table), which Pillow cannot open.

    Reads the table directory of .ttf/.otf/.woff files; .woff2 is not checked."""
    data = path.read_bytes()[:4096]
    if data[:4] == b"wOFF":
        n, start, size = int.from_bytes(data[12:14], "big"), 44, 20
    elif data[:4] in (b"\x00\x01\x00\x00", b"OTTO", b"true"):
        n, start, size = int.from_bytes(data[4:6], "big"), 12, 16
    else:
        return True
    entries = (data[start + i * size:start + (i + 1) * size] for i in range(n))
    lengths = {e[:4]: int.from_bytes(e[12:16], "big") for e in entries}  # tag -> (uncompressed) length
    return any(lengths.get(t, 0) > 100 for t in (b"glyf", b"CFF ", b"CFF2"))


def short(name: str) -> str:
    name = name.strip()
    return ALIASES.get(name.lower(), name)


def debian_license(text: str) -> str:
    """Licences of the upstream (non debian/*) stanzas of a Debian copyright file."""
    found = []
    if "Format:" in text.split("\n\n", 1)[0]:  # machine-readable (DEP-5)
        for stanza in re.split(r"\n\s*\n", text):
            files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", stanza, re.M)
            lic = re.search(r"^License:[ \t]*(\S.*)$", stanza, re.M)
            if not (files and lic) or all(f.startswith("debian/") for f in files.group(1).split()):
                continue
            # "GPL-3+ with font exception" etc.: spell the 'or' / 'and' parts out one by one.
            for part in re.split(r"\s+(or|and)\s+|\s*[|,]\s*", lic.group(1)):
                if part and part not in ("or", "and") and short(part) not in found:
                    found.append(short(part))
    if not found:
        found = [name for pat, name in CLUES if re.search(pat, text)][:2]
        if "GPL" in found and re.search(r"font exception|As a special exception, if you create a document", text):
            found[found.index("GPL")] = "GPL with font exception"
    return " AND ".join(found) if found else "unknown"


def package_license(pkg_dir: Path) -> str:
    if (pkg_dir / "package.json").exists():  # @fontsource
        return json.loads((pkg_dir / "package.json").read_text()).get("license") or "unknown"
    copyright_file = pkg_dir / "copyright"
    if not copyright_file.exists() and (pkg_dir / "copyright.link").exists():
        copyright_file = pkg_dir.parent / (pkg_dir / "copyright.link").read_text().strip() / "copyright"
    if not copyright_file.exists():
        return "unknown"
    return debian_license(copyright_file.read_text(errors="replace"))


def main(cache: Path) -> None:
    files_root = cache / "files"
    records, skipped = [], []
    for pkg_dir in sorted(p for kind in ("deb", "npm") for p in (files_root / kind).glob("*") if p.is_dir()):
        source = (pkg_dir / "SOURCE").read_text().strip()
        version = (pkg_dir / "VERSION").read_text().strip()
        license_ = package_license(pkg_dir)
        for f in sorted(pkg_dir.rglob("*")):
            if not f.is_file() or f.suffix.lower() not in FONT_EXT:
                continue
            if not has_outlines(f):
                skipped.append(f.relative_to(files_root).as_posix())
                continue
            m = FONTSOURCE_NAME.search(f.name) if source.startswith("npm:") else None
            records.append({
                "path": f.relative_to(files_root).as_posix(),
                "source": source,
                "version": version,
                "license": license_,
                "weight_from_filename": int(m.group(1)) if m else None,
                "italic_from_filename": (m.group(2) == "italic") if m else None,
                "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            })
    (cache / "manifest.json").write_text(json.dumps(records, indent=1) + "\n")
    if skipped:
        print(f"left out {len(skipped)} bitmap-only files:", *skipped, sep="\n  ")
    n_pkg = len({r["source"] for r in records})
    print(f"manifest: {len(records)} font files from {n_pkg} packages -> {cache / 'manifest.json'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "fontcache"))
