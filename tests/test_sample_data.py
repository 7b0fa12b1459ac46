"""`python -m training_code.sample_data`: the datasets every shipped program reads, and their upload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smtrain.core import contract, programs
from tests.conftest import ROOT
from training_code.sample_data import CHANNELS, PROGRAMS, write_datasets


def test_layout_and_format(sample_data: Path) -> None:
    total = 0
    assert PROGRAMS == ("digits_mlp", "digits_lightgbm", "digits_xgboost", "digits_sklearn", "digits_tensorflow",
                        "digits_xgboost_script", "digits_huggingface")
    shipped = programs.discover()
    assert {p: tuple(c.name for c in shipped[p].channels) for p in PROGRAMS} == dict.fromkeys(PROGRAMS, CHANNELS)
    for program in PROGRAMS:
        for channel in CHANNELS:
            rows = np.loadtxt(sample_data / program / channel / "digits.csv", delimiter=",")
            assert rows.shape[1] == 65, "label + 8x8 pixels"
            assert set(np.unique(rows[:, 0])) == set(range(10)), "every class in every channel"
            assert rows.min() >= 0 and rows[:, 1:].max() <= 16
            if program == "digits_mlp":
                total += len(rows)
    assert total == 1797
    header = (sample_data / "digits_xgboost" / "train" / "digits.csv").read_text().splitlines()[0]
    assert header.split(",")[0].isdigit(), "no header row (the built-in algorithm requires it)"


def test_same_seed_same_files(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_datasets(tmp_path / "a")]
    second = [p.read_bytes() for p in write_datasets(tmp_path / "b")]
    assert first == second
    other = [p.read_bytes() for p in write_datasets(tmp_path / "c", seed=1)]
    assert other != first


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training_code.sample_data", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    ([], "the following arguments are required: --out"),
    (["--out", "{tmp}", "--validation-fraction", "0.9"], "--validation-fraction must be between"),
    (["--out", "{tmp}", "--bucket", "Not_A_Bucket"], "is not a valid S3 bucket name"),
    (["--out", "{file}"], "exists and is not a directory"),
])
def test_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "file").write_text("x")
    result = _cli(*(a.format(tmp=tmp_path / "out", file=tmp_path / "file") for a in args))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_upload_to_the_default_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import boto3
    from moto import mock_aws

    from training_code import sample_data

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="smtrain-data")
        assert sample_data.main(["--out", str(tmp_path), "--bucket", "smtrain-data"]) == 0
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="smtrain-data")["Contents"])
        assert keys == sorted(f"datasets/{p}/{c}/digits.csv" for p in PROGRAMS for c in CHANNELS)
        # Where the state machine reads each program's channels when the input names none.
        for program in PROGRAMS:
            for channel in CHANNELS:
                prefix = contract.default_channel_uri("smtrain-data", program, channel)
                assert f"{prefix}digits.csv" == f"s3://smtrain-data/datasets/{program}/{channel}/digits.csv"
        body = s3.get_object(Bucket="smtrain-data", Key="datasets/digits_xgboost/train/digits.csv")["Body"]
        assert body.read() == (tmp_path / "digits_xgboost" / "train" / "digits.csv").read_bytes()
        # A bucket that does not exist: a clear error and exit status 1.
        assert sample_data.main(["--out", str(tmp_path), "--bucket", "missing-bucket"]) == 1
        assert "error: upload to s3://missing-bucket failed" in capsys.readouterr().err


def test_a_kept_split_is_the_split_and_a_damaged_one_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each split is kept between processes (splitting imports scikit-learn): read back, it is
    the split scikit-learn makes; a kept file that cannot be read is made again; an unwritable
    cache keeps nothing and still gives the split."""
    from training_code import sample_data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = sample_data._split(validation_fraction=0.2, seed=0)
    first = sample_data.digits_split(validation_fraction=0.2, seed=0)
    (kept,) = (tmp_path / "cache" / "smtrain" / "sample-data").iterdir()
    assert kept.name.startswith("digits-v1-sklearn") and kept.name.endswith("-0.2-0.npz")

    def refuse(**_: object) -> None:
        raise AssertionError("split again")

    monkeypatch.setattr(sample_data, "_split", refuse)
    again = sample_data.digits_split(validation_fraction=0.2, seed=0)
    for channel in CHANNELS:
        assert np.array_equal(first[channel], made[channel]) and np.array_equal(again[channel], made[channel])
        assert again[channel].dtype == made[channel].dtype
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    whole = kept.read_bytes()
    for damaged in (b"not a whole file", whole[:len(whole) // 2], whole[:-10]):
        kept.write_bytes(damaged)
        assert np.array_equal(sample_data.digits_split(validation_fraction=0.2, seed=0)["train"], made["train"])
        assert kept.read_bytes() == whole, "made again and kept"
    assert [p.name for p in kept.parent.iterdir()] == [kept.name], "no partial file left"
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert np.array_equal(sample_data.digits_split(validation_fraction=0.2, seed=0)["validation"],
                          made["validation"])
