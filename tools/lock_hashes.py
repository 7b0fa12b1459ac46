"""Write sha256 hashes into requirements-lock.txt: every file PyPI serves for each pinned version.

    .venv/bin/python tools/lock_hashes.py [--wheel PATH ...]

Each pin ``name==version`` (with its marker) gets ``--hash=sha256:...`` for every file of that
release on PyPI (its simple index in JSON, PEP 691: wheels for every platform and the sdist), so
an install from PyPI on any platform matches one of them and nothing else installs (uv and pip
check a downloaded file against the hashes of its constraint line).
``--wheel`` adds the hash of a wheel served from elsewhere for one of the pins (the CPU build of
torch a find-links directory holds, say); the lock's header names it. A hash already on a line
that PyPI does not list is kept (so refreshing needs no ``--wheel`` again); the others are
written afresh. A line that is not one ``name==version[; marker]`` pin, or a pin PyPI does not
know, stops the script, naming it.
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
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
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
    """(canonical project name, sha256) of a wheel file."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    return canonicalize_name(parse_wheel_filename(path.name)[0]), hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    from packaging.utils import canonicalize_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, action="append", default=[],
                        help="a wheel from elsewhere whose hash its pin also accepts")
    args = parser.parse_args()
    extra: dict[str, list[str]] = {}
    for wheel in args.wheel:
        name, digest = wheel_hash(wheel)
        extra.setdefault(name, []).append(digest)
    lines = []
    for number, line in enumerate(LOCK.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            lines.append(line)
            continue
        match = PIN.match(line)
        if not match:
            raise SystemExit(f"requirements-lock.txt:{number}: not a `name==version[; marker]` pin on one "
                             f"line: {line[:80]!r}")
        name, version = match["name"], match["version"]
        listed = pypi_hashes(name, version)
        # A hash PyPI does not list stays while the pin does (a wheel added with --wheel before).
        kept = [h for h in HASH.findall(line) if h not in listed]
        hashes = listed + kept + [h for h in extra.pop(canonicalize_name(name), []) if h not in kept]
        rest = match["rest"].rstrip()
        lines.append(f"{name}=={version}{rest} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
        print(f"{name}=={version}: {len(listed)} hashes from PyPI, {len(hashes) - len(listed)} others",
              file=sys.stderr)
    if extra:
        raise SystemExit(f"--wheel for packages the lock does not pin: {sorted(extra)}")
    LOCK.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
