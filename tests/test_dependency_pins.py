"""The pinned install works from PyPI alone.

`make install` runs `pip install -r requirements-dev.txt -c requirements-lock.txt`. These checks read
the three files (offline) and keep them installable from the default index: no local version labels
(`torch==2.13.0+cpu` exists only on PyTorch's own index), the top-level pins agreeing with the lock,
and the lock pinning torch's CUDA packages, which PyPI's Linux build of torch pulls in.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"
TOP_LEVEL = (ROOT / "requirements.txt", ROOT / "requirements-dev.txt")

# What PyPI's torch 2.13.0 wheels for Linux (x86_64 and aarch64) require beyond the pure-Python
# packages, with the markers torch gives them; the CUDA libraries come through cuda-toolkit's extras
# and cuda-bindings.
LINUX = 'platform_system == "Linux"'
LINUX_BEFORE_315 = 'platform_system == "Linux" and python_version < "3.15"'
TORCH_LINUX_PACKAGES = {
    "cuda-toolkit": LINUX,
    "cuda-bindings": LINUX_BEFORE_315,
    "cuda-pathfinder": LINUX_BEFORE_315,
    "nvidia-cublas": LINUX,
    "nvidia-cuda-cupti": LINUX,
    "nvidia-cuda-nvrtc": LINUX,
    "nvidia-cuda-runtime": LINUX,
    "nvidia-cudnn-cu13": LINUX,
    "nvidia-cufft": LINUX,
    "nvidia-cufile": LINUX,
    "nvidia-curand": LINUX,
    "nvidia-cusolver": LINUX,
    "nvidia-cusparse": LINUX,
    "nvidia-cusparselt-cu13": LINUX,
    "nvidia-nccl-cu13": LINUX,
    "nvidia-nvjitlink": LINUX,
    "nvidia-nvshmem-cu13": LINUX,
    "nvidia-nvtx": LINUX,
    "triton": LINUX_BEFORE_315,
}


#: A hash option of a requirement line (pip's and uv's hash-checking form).
HASH_OPTION = re.compile(r"\s--hash=(?P<algorithm>\w+):(?P<digest>\S+)")


def requirement_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each requirement line: no comments, blanks, `-r` includes or
    `--hash` options."""
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = HASH_OPTION.sub("", raw.split(" #", 1)[0]).strip()
        if text and not text.startswith("#") and not text.startswith("-r "):
            lines.append((number, text))
    return lines


def test_every_lock_line_carries_the_sha256_of_its_files() -> None:
    """Each pin lists sha256 hashes (tools/lock_hashes.py: every file PyPI serves for that
    version), so uv installs only those files; a line without them, or with another algorithm,
    would let any file of that name and version in."""
    for number, raw in enumerate(LOCK.read_text().splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        hashes = HASH_OPTION.findall(raw)
        assert hashes, f"requirements-lock.txt:{number}: no --hash; run `make lock-hashes`"
        assert all(algorithm == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest) for algorithm, digest in hashes), (
            f"requirements-lock.txt:{number}: every hash is a sha256 of 64 hex digits")


def parse(path: Path) -> list[tuple[int, Requirement]]:
    parsed = []
    for number, text in requirement_lines(path):
        try:
            parsed.append((number, Requirement(text)))
        except InvalidRequirement as error:
            raise AssertionError(f"{path.name}:{number}: {text!r} is not a valid requirement ({error})") from None
    return parsed


def exact_version(requirement: Requirement) -> str | None:
    """The version of an `==X` pin (one specifier, no wildcard), else None."""
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == "==" and not specifiers[0].version.endswith(".*"):
        return specifiers[0].version
    return None


def lock_pins() -> dict[NormalizedName, Requirement]:
    pins: dict[NormalizedName, Requirement] = {}
    for number, requirement in parse(LOCK):
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"requirements-lock.txt:{number}: {requirement.name} is pinned twice; keep one line"
        pins[name] = requirement
    return pins


def test_no_pin_has_a_local_version_label() -> None:
    for path in (LOCK, *TOP_LEVEL):
        for number, requirement in parse(path):
            for specifier in requirement.specifier:
                assert "+" not in specifier.version, (
                    f"{path.name}:{number}: {requirement} has a local version label "
                    f"(+{specifier.version.split('+', 1)[1]}), which PyPI never serves; pin the plain "
                    f"version (e.g. torch==2.13.0) and leave builds like +cpu to `make install TORCH_INDEX=...`"
                )


def test_every_lock_line_is_an_exact_pin() -> None:
    for number, requirement in parse(LOCK):
        assert exact_version(requirement) is not None, (
            f"requirements-lock.txt:{number}: {requirement} is not an exact `name==version` pin; "
            f"pin the version that pip resolves"
        )
        assert not requirement.extras, (
            f"requirements-lock.txt:{number}: {requirement} has extras, which pip refuses in a constraints "
            f"file; drop the [extras] and pin the packages they pull in on their own lines"
        )


def test_every_top_level_requirement_is_an_exact_pin() -> None:
    for path in TOP_LEVEL:
        for number, requirement in parse(path):
            assert exact_version(requirement) is not None, (
                f"{path.name}:{number}: {requirement} is not an exact `name==version` pin; "
                f"write it as {requirement.name}==<version in requirements-lock.txt>"
            )


def test_top_level_pins_match_the_lock() -> None:
    pins = lock_pins()
    for path in TOP_LEVEL:
        for number, requirement in parse(path):
            name = canonicalize_name(requirement.name)
            assert name in pins, (
                f"{path.name}:{number}: {requirement.name} is not in requirements-lock.txt; "
                f"add `{requirement.name}=={exact_version(requirement)}` there (sorted) with the "
                f"packages it pulls in"
            )
            locked = exact_version(pins[name])
            assert exact_version(requirement) == locked, (
                f"{path.name}:{number}: {requirement} but requirements-lock.txt pins {pins[name]}; "
                f"change one so both name the same version"
            )


def test_torch_cuda_packages_are_pinned_with_torchs_markers() -> None:
    pins = lock_pins()
    torch = pins.get(canonicalize_name("torch"))
    assert torch is not None and torch.marker is None, (
        "requirements-lock.txt must pin torch on every platform (`torch==<version>`, no marker)"
    )
    missing = sorted(set(TORCH_LINUX_PACKAGES) - set(pins))
    assert not missing, (
        f"requirements-lock.txt lacks {', '.join(missing)}, which PyPI's torch {exact_version(torch)} "
        f"pulls in on Linux; pin them with torch's markers so the lock stays complete"
    )
    for name, marker in TORCH_LINUX_PACKAGES.items():
        pinned = pins[canonicalize_name(name)]
        assert pinned.marker is not None and str(pinned.marker) == str(Marker(marker)), (
            f"requirements-lock.txt: {pinned} should carry torch's marker: `{name}==<version>; {marker}`"
        )


def test_the_lock_is_sorted() -> None:
    names = [text for _, text in requirement_lines(LOCK)]
    assert names == sorted(names, key=str.lower), (
        "requirements-lock.txt is out of order; sort its requirement lines case-insensitively"
    )


def test_the_hash_writer_reads_every_lock_line_as_one_pin() -> None:
    """tools/lock_hashes.py rewrites a line it reads as `name==version[; marker] --hash...`: every
    line of the lock is one (it stops on any other), its marker kept apart from its hashes."""
    from tools.lock_hashes import HASH, PIN

    for number, raw in enumerate(LOCK.read_text().splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        match = PIN.match(raw)
        assert match, f"requirements-lock.txt:{number}: tools/lock_hashes.py would stop here"
        assert "--hash" not in match["rest"] and HASH.findall(raw)
    marked = PIN.match('triton==3.7.0; platform_system == "Linux" --hash=sha256:' + "a" * 64)
    assert marked is not None and marked["rest"].strip() == '; platform_system == "Linux"'
    assert PIN.match("dill==0.4.1 # a comment") is None, "a comment on a pin line is refused, not dropped"
