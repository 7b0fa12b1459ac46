"""Write sha256 hashes into requirements-lock.txt: every file PyPI serves for each pinned version.

    .venv/bin/python tools/lock_hashes.py [--wheel PATH ...]

Each pin ``name==version`` (with its marker) gets ``--hash=sha256:...`` for every file of that
release on PyPI (its simple index in JSON, PEP 691: wheels for every platform and the sdist), so
an install from PyPI on any platform matches one of them and nothing else installs (uv and pip
check a downloaded file against the hashes of its constraint line).
``--wheel`` adds the hash of a wheel served from elsewhere for one of the pins (the CPU build of
torch a find-links directory holds, say); the lock's header names it. Hashes already on a line
are replaced. A pin PyPI does not know stops the script, naming it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.request
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements-lock.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^;\s]+)(?P<rest>[^#]*?)\s*(--hash=\S+\s*)*$")


def pypi_hashes(name: str, version: str) -> list[str]:
    """The sha256 of every file of ``name`` ``version`` in PyPI's simple index (its JSON form,
    PEP 691: ``https://pypi.org/simple/<name>/``)."""
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        canonicalize_name,
        parse_sdist_filename,
        parse_wheel_filename,
    )
    from packaging.version import Version

    request = urllib.request.Request(f"https://pypi.org/simple/{canonicalize_name(name)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    wanted, hashes = Version(version), set()
    for file in files:
        filename = file["filename"]
        try:
            found = (parse_wheel_filename(filename)[1] if filename.endswith(".whl")
                     else parse_sdist_filename(filename)[1])
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if found == wanted and "sha256" in file.get("hashes", {}):
            hashes.add(file["hashes"]["sha256"])
    if not hashes:
        raise SystemExit(f"PyPI lists no file of {name}=={version}")
    return sorted(hashes)


def wheel_hash(path: Path) -> tuple[str, str]:
    """(normalized project name, sha256) of a wheel file."""
    name = path.name.split("-", 1)[0].replace("_", "-").lower()
    return name, hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, action="append", default=[],
                        help="a wheel from elsewhere whose hash its pin also accepts")
    args = parser.parse_args()
    extra: dict[str, list[str]] = {}
    for wheel in args.wheel:
        name, digest = wheel_hash(wheel)
        extra.setdefault(name, []).append(digest)
    lines = []
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if not match:
            lines.append(line)
            continue
        name, version = match["name"], match["version"]
        hashes = pypi_hashes(name, version) + extra.pop(re.sub(r"[-_.]+", "-", name).lower(), [])
        rest = match["rest"].rstrip()
        lines.append(f"{name}=={version}{rest} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
        print(f"{name}=={version}: {len(hashes)} hashes", file=sys.stderr)
    if extra:
        raise SystemExit(f"--wheel for packages the lock does not pin: {sorted(extra)}")
    LOCK.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
