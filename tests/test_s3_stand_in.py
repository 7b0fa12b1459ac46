"""The offline S3 stand-in maps each key inside its bucket's folder, and nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtrain.local.s3_stand_in import LocalS3, S3UriError


def test_keys_map_inside_their_bucket(tmp_path: Path) -> None:
    s3 = LocalS3(tmp_path / "s3")
    bucket = tmp_path / "s3" / "data-bucket"
    assert s3.path("s3://data-bucket/datasets/train/a.csv") == bucket / "datasets" / "train" / "a.csv"
    assert s3.path("s3://data-bucket/datasets/") == tmp_path / "s3" / "data-bucket" / "datasets"
    assert s3.path("s3://data-bucket") == tmp_path / "s3" / "data-bucket"


@pytest.mark.parametrize(("uri", "message"), [
    # S3 allows a key that starts with "/": joined to a folder it would name the machine's root.
    ("s3://data-bucket//etc/passwd", "an S3 key with an empty part ('//') is not supported offline"),
    ("s3://data-bucket/a//b", "an S3 key with an empty part ('//') is not supported offline"),
    ("s3://data-bucket/../other-bucket/x", "S3 key may not climb out of its bucket"),
])
def test_a_key_that_would_leave_its_bucket_is_refused(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(S3UriError, match=re.escape(message)):
        LocalS3(tmp_path / "s3").path(uri)


def test_a_link_inside_the_bucket_leads_nowhere_outside_it(tmp_path: Path) -> None:
    secret = tmp_path / "home" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("credentials")
    bucket = tmp_path / "s3" / "data-bucket"
    bucket.mkdir(parents=True)
    (bucket / "outside").symlink_to(secret.parent)
    s3 = LocalS3(tmp_path / "s3")
    with pytest.raises(S3UriError, match="leads out of its bucket's folder"):
        s3.path("s3://data-bucket/outside/secret.txt")
    with pytest.raises(S3UriError):
        s3.objects_under("s3://data-bucket/outside/")
