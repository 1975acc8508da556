#!/usr/bin/env python3
"""Assemble one .deb from a crate's [package.metadata.deb] table (cargo-deb's format) with
dpkg-deb, for machines without cargo-deb (scripts/package's fallback, docs/packaging.md).

It reads the table through `cargo metadata`, so both builders package the same files:
assets (globs allowed; `target/release/` is the directory of the binaries being packaged),
conf-files, maintainer-scripts, depends (`$auto`: libc6 at the newest GLIBC symbol version the
binaries use, nothing for a static build), and writes DEBIAN/control, conffiles, md5sums and
usr/share/doc/<package>/copyright. Prints the .deb's path.
"""

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap


def fail(msg):
    sys.exit(f"package-deb: {msg}")


def metadata(package):
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
        check=True, capture_output=True, text=True,
    ).stdout
    for p in json.loads(out)["packages"]:
        if p["name"] == package:
            deb = (p.get("metadata") or {}).get("deb")
            if not deb:
                fail(f"{package} has no [package.metadata.deb]")
            return p, deb
    fail(f"no package {package} in the workspace")


def glibc_depends(binaries):
    """libc6 (>= newest GLIBC_x.y the binaries reference), or None for static binaries."""
    newest = None
    for b in binaries:
        with open(b, "rb") as f:
            for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)", f.read()):
                v = (int(m.group(1)), int(m.group(2)))
                newest = max(newest or v, v)
    return f"libc6 (>= {newest[0]}.{newest[1]})" if newest else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--target", default="")
    args = ap.parse_args()

    pkg, deb = metadata(args.package)
    crate_dir = os.path.dirname(pkg["manifest_path"])
    name = deb.get("name", pkg["name"])
    version = pkg["version"] + (f"-{deb['revision']}" if deb.get("revision") else "")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(
        (args.target or os.uname().machine).split("-")[0], "amd64")

    root = tempfile.mkdtemp(prefix=f"{name}-deb-")
    os.chmod(root, 0o755)
    try:
        binaries = []
        for src, dest, mode in deb["assets"]:
            if src.startswith("target/release/"):
                src = os.path.join(args.bin_dir, src[len("target/release/"):])
            else:
                src = os.path.normpath(os.path.join(crate_dir, src))
            matches = sorted(glob.glob(src))
            if not matches:
                fail(f"asset {src} does not exist")
            for path in matches:
                to = os.path.join(root, dest.lstrip("/"))
                if dest.endswith("/"):
                    to = os.path.join(to, os.path.basename(path))
                os.makedirs(os.path.dirname(to), exist_ok=True)
                shutil.copyfile(path, to)
                os.chmod(to, int(mode, 8))
                if dest.rstrip("/") == "usr/bin":
                    binaries.append(path)

        doc = os.path.join(root, "usr/share/doc", name)
        os.makedirs(doc, exist_ok=True)
        lic = deb.get("license-file")
        with open(os.path.join(doc, "copyright"), "w") as f:
            f.write("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
            f.write(f"Upstream-Name: {name}\nCopyright: {deb.get('copyright', '')}\n")
            f.write(f"License: {pkg.get('license', '')}\n")
            if lic:
                with open(os.path.join(crate_dir, lic[0])) as lf:
                    lines = lf.read().splitlines()[int(lic[1]):]
                f.write("".join(f" {l}\n" if l.strip() else " .\n" for l in lines))
        os.chmod(os.path.join(doc, "copyright"), 0o644)

        control_dir = os.path.join(root, "DEBIAN")
        os.makedirs(control_dir)
        scripts = deb.get("maintainer-scripts")
        if scripts:
            for s in ("preinst", "postinst", "prerm", "postrm"):
                src = os.path.join(crate_dir, scripts, s)
                if os.path.exists(src):
                    shutil.copyfile(src, os.path.join(control_dir, s))
                    os.chmod(os.path.join(control_dir, s), 0o755)
        conf = deb.get("conf-files", [])
        for c in conf:
            if not os.path.isfile(os.path.join(root, c.lstrip("/"))):
                fail(f"conf-file {c} is not among the assets")
        if conf:
            with open(os.path.join(control_dir, "conffiles"), "w") as f:
                f.write("".join(c + "\n" for c in conf))

        depends = []
        for d in deb.get("depends", "$auto").split(","):
            d = d.strip()
            if d == "$auto":
                d = glibc_depends(binaries)
            if d:
                depends.append(d)

        size = 0
        sums = []
        for dirpath, _, files in sorted(os.walk(root)):
            if dirpath.startswith(control_dir):
                continue
            for fn in sorted(files):
                path = os.path.join(dirpath, fn)
                size += os.path.getsize(path)
                with open(path, "rb") as f:
                    sums.append(f"{hashlib.md5(f.read()).hexdigest()}  {os.path.relpath(path, root)}\n")
        with open(os.path.join(control_dir, "md5sums"), "w") as f:
            f.writelines(sums)

        desc = pkg.get("description", "").strip()
        ext = deb.get("extended-description", "").strip()
        fields = [
            ("Package", name), ("Version", version), ("Architecture", arch),
            ("Maintainer", deb.get("maintainer", "")), ("Installed-Size", str((size + 1023) // 1024)),
            ("Depends", ", ".join(depends)), ("Recommends", deb.get("recommends", "")),
            ("Section", deb.get("section", "")), ("Priority", deb.get("priority", "")),
            ("Homepage", pkg.get("homepage") or pkg.get("repository") or ""),
        ]
        with open(os.path.join(control_dir, "control"), "w") as f:
            for k, v in fields:
                if v:
                    f.write(f"{k}: {v}\n")
            f.write(f"Description: {desc}\n")
            # Wrapped as cargo-deb wraps it.
            for para in ext.split("\n\n"):
                for line in textwrap.wrap(" ".join(para.split()), 79) or ["."]:
                    f.write(f" {line}\n")

        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(os.path.abspath(args.out), f"{name}_{version}_{arch}.deb")
        # Unstripped dev builds (the tests') are large and xz is slow on them: xz only for
        # release-sized binaries.
        big = sum(os.path.getsize(b) for b in binaries) > 32 << 20
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Z", "gzip" if big else "xz",
             *(["-z", "1"] if big else []), "--build", root, path],
            check=True, stdout=subprocess.DEVNULL,
        )
        print(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
