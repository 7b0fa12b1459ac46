"""Write (and optionally upload) the sample datasets the shipped digits programs use.

    python -m training_code.sample_data --out DIR [--bucket NAME] [--validation-fraction 0.2]

The data is scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes; shipped
with the package, nothing is downloaded). Every program reads the same format, the one SageMaker's
built-in XGBoost requires: CSV, label in the first column, no header. Files land in
``DIR/<program>/<channel>/digits.csv`` for each program of :data:`PROGRAMS` and channels ``train``,
``validation``; with ``--bucket`` they are uploaded to
``s3://NAME/datasets/<program>/<channel>/digits.csv``, the state machine's default inputs.

Splitting the digits imports scikit-learn (about 1.3 s of a new process, which the offline engine,
the demo and the notebook do not otherwise import), so each split is kept in
``$XDG_CACHE_HOME/smtrain/sample-data`` (``~/.cache``), named by what decides it: scikit-learn's
and NumPy's versions, the validation fraction and the seed. A kept split that cannot be read is
made again; where the folder cannot be written, nothing is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import zipfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np

from smtrain.core.contract import DATASETS_PREFIX
from smtrain.core.user_cache import cache_folder, write_whole

#: The shipped programs that train on the digits sample (folders of training_code/): the three
#: program kinds, then one script program per other framework the SDK runs scripts on (each as
#: ``smtrain new-program NAME --kind script --framework F`` writes it).
PROGRAMS = ("digits_mlp", "digits_lightgbm", "digits_xgboost",
            "digits_sklearn", "digits_tensorflow", "digits_xgboost_script", "digits_huggingface")
CHANNELS = ("train", "validation")
FILE_NAME = "digits.csv"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


#: The kept files' format: a change to :func:`_split`'s rows changes it, so no older file is read.
_KEPT_FORMAT = "v1"


def _kept_split_path(*, validation_fraction: float, seed: int) -> Path:
    from importlib.metadata import version

    return (cache_folder("sample-data")
            / (f"digits-{_KEPT_FORMAT}-sklearn{version('scikit-learn')}-numpy{np.__version__}"
               f"-{validation_fraction!r}-{seed}.npz"))


def digits_split(*, validation_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """``{"train": rows, "validation": rows}``, each row ``[label, 64 pixels]``, stratified by
    label and the same for the same seed (kept between processes: see the module's notes)."""
    try:
        kept = _kept_split_path(validation_fraction=validation_fraction, seed=seed)
    except (RuntimeError, KeyError, PackageNotFoundError):  # no home folder; no scikit-learn
        return _split(validation_fraction=validation_fraction, seed=seed)
    try:
        with np.load(kept, allow_pickle=False) as stored:
            return {channel: stored[channel] for channel in CHANNELS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, or not whole
        pass
    split = _split(validation_fraction=validation_fraction, seed=seed)
    with contextlib.suppress(OSError):  # not writable: nothing kept
        write_whole(kept, lambda out: np.savez(out, train=split["train"], validation=split["validation"]))
    return split


def _split(*, validation_fraction: float, seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    rows = np.column_stack([digits.target, digits.data]).astype(np.int64)
    train, validation = train_test_split(rows, test_size=validation_fraction, random_state=seed,
                                         stratify=digits.target)
    return {"train": train, "validation": validation}


def write_datasets(out: Path, *, validation_fraction: float = 0.2, seed: int = 0) -> list[Path]:
    """Write every program's channels under ``out``; returns the files written."""
    split = digits_split(validation_fraction=validation_fraction, seed=seed)
    written = []
    for program in PROGRAMS:
        for channel in CHANNELS:
            path = out / program / channel / FILE_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(path, split[channel], delimiter=",", fmt="%d")
            written.append(path)
    return written


def upload(files: Sequence[Path], *, out: Path, bucket: str) -> list[str]:
    """Upload ``files`` to ``s3://bucket/datasets/<path relative to out>``; returns the URIs."""
    import boto3

    s3 = boto3.client("s3")
    uris = []
    for path in files:
        key = DATASETS_PREFIX + path.relative_to(out).as_posix()
        s3.upload_file(str(path), bucket, key)
        uris.append(f"s3://{bucket}/{key}")
    return uris


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training_code.sample_data",
                                     description="Write the sample datasets for the digits programs.")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--bucket", help="also upload to this S3 bucket under datasets/")
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="share of rows held out for validation (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = parser.parse_args(argv)
    if not 0.05 <= args.validation_fraction <= 0.5:
        parser.error("--validation-fraction must be between 0.05 and 0.5")
    if args.bucket is not None and not _BUCKET_NAME.match(args.bucket):
        parser.error(f"--bucket {args.bucket!r} is not a valid S3 bucket name")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    files = write_datasets(args.out, validation_fraction=args.validation_fraction, seed=args.seed)
    for path in files:
        print(f"wrote {path}")
    if args.bucket:
        try:
            for uri in upload(files, out=args.out, bucket=args.bucket):
                print(f"uploaded {uri}")
        except Exception as error:  # botocore's errors carry the service's reason
            print(f"error: upload to s3://{args.bucket} failed: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
