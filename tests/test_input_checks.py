"""`smtrain/cli/input_checks.py`: data mistakes in local --input folders are refused with the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from smtrain.cli.execution_request import ChannelInput
from smtrain.cli.input_checks import check_local_channels
from smtrain.core.errors import InputError
from smtrain.core.programs import Program, discover


@pytest.fixture(scope="module")
def program() -> Program:
    return discover()["digits_mlp"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _inputs(**folders: Path) -> list[ChannelInput]:
    return [ChannelInput(channel, None, folder) for channel, folder in folders.items()]


def _refusal(inputs: list[ChannelInput], program: Program) -> str:
    with pytest.raises(InputError) as caught:
        check_local_channels(inputs, program)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_good_input_passes(tmp_path: Path, program: Program) -> None:
    _write(tmp_path / "train" / "part-0.csv", "1,0.5,0.25\n2,0.1,0.9\n")
    _write(tmp_path / "train" / ".DS_Store", "junk")
    _write(tmp_path / "validation" / "part-0.csv", "0,0.3,0.7\n")
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), program)


def test_s3_inputs_are_left_alone(program: Program) -> None:
    check_local_channels([ChannelInput("train", "s3://bucket/datasets/train/", None)], program)


def test_nested_csv_folders_not_named_like_channels_pass(tmp_path: Path, program: Program) -> None:
    _write(tmp_path / "train" / "2024" / "01" / "a.csv", "1,0.5\n")
    _write(tmp_path / "train" / "2024" / "02" / "b.csv", "2,0.6\n")
    _write(tmp_path / "validation" / "shard-1" / "c.csv", "3,0.7\n")
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), program)


def test_dataset_root_is_refused_with_the_exact_fix(tmp_path: Path, program: Program) -> None:
    root = tmp_path / "data"
    _write(root / "train" / "a.csv", "1,0.5\n")
    _write(root / "validation" / "b.csv", "2,0.6\n")
    message = _refusal(_inputs(train=root), program)
    assert message.startswith("input train: folder ")
    assert "looks like a dataset root" in message
    assert f"--input train={root}/train --input validation={root}/validation" in message


def test_a_hugging_face_dataset_dict_is_one_dataset_not_a_root_of_channels(tmp_path: Path, program: Program) -> None:
    """AWS's Hugging Face examples give a channel a DatasetDict saved whole (its splits as
    sub-folders, dataset_dict.json on top) and load it with load_from_disk: not refused."""
    root = tmp_path / "dataset"
    for split in ("train", "validation", "test"):
        _write(root / split / "data-00000-of-00001.csv", f"{split},1\n")
    _write(tmp_path / "validation" / "v.csv", "2,0.6\n")
    message = _refusal(_inputs(train=root, validation=tmp_path / "validation"), program)
    assert "looks like a dataset root" in message  # without the DatasetDict's file: refused
    _write(root / "dataset_dict.json", '{"splits": ["train", "validation", "test"]}')
    check_local_channels(_inputs(train=root, validation=tmp_path / "validation"), program)


def test_folder_without_the_content_type_is_refused(tmp_path: Path, program: Program) -> None:
    train = tmp_path / "train"
    for name in ("a.parquet", "b.parquet", "c.parquet", "d.parquet"):
        _write(train / name, name)
    _write(train / ".hidden.csv", "1,0.5\n")  # hidden: does not count
    _write(tmp_path / "validation" / "v.csv", "2,0.6\n")
    message = _refusal(_inputs(train=train, validation=tmp_path / "validation"), program)
    assert message.startswith(f"input train: folder {train} holds no text/csv file (.csv)")
    assert "only a.parquet, b.parquet, c.parquet and 1 more" in message
    assert "d.parquet" not in message
    assert "--input train=" in message
    # Files named otherwise (AWS's abalone example writes abalone.train): the manifest's setting.
    assert message.endswith("list their endings in the channel's extensions in program.toml "
                            '(e.g. extensions = [".parquet"])')


def test_folder_with_only_hidden_files_is_refused(tmp_path: Path, program: Program) -> None:
    _write(tmp_path / "train" / ".DS_Store", "junk")
    message = _refusal(_inputs(train=tmp_path / "train"), program)
    assert message.startswith("input train: ") and "holds no files" in message


def test_same_file_in_train_and_validation_is_refused(tmp_path: Path, program: Program) -> None:
    train = _write(tmp_path / "train" / "all.csv", "1,0.5\n2,0.6\n")
    _write(tmp_path / "train" / "other.csv", "3,0.7\n4,0.8\n")  # same size, other content
    validation = _write(tmp_path / "validation" / "copy.csv", "1,0.5\n2,0.6\n")
    _write(tmp_path / "validation" / "held-out.csv", "5,0.1\n")
    message = _refusal(_inputs(train=train.parent, validation=validation.parent), program)
    assert message.startswith("input train and validation: ")
    assert str(train) in message and str(validation) in message
    assert "other.csv" not in message
    assert "validation must hold data the model does not train on" in message


def test_same_size_different_content_passes(tmp_path: Path, program: Program) -> None:
    _write(tmp_path / "train" / "a.csv", "1,0.5\n")
    _write(tmp_path / "validation" / "a.csv", "2,0.5\n")
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), program)


def test_same_folder_twice_is_refused(tmp_path: Path, program: Program) -> None:
    folder = tmp_path / "data"
    _write(folder / "a.csv", "1,0.5\n")
    message = _refusal(_inputs(train=folder, validation=tmp_path / "." / "data"), program)
    assert message.startswith(f"input train and validation: both read the folder {folder}")
    assert "validation must hold data the model does not train on" in message
    assert message.endswith("declare shares_data = true on channel validation in program.toml")


def _sharing(program: Program, name: str) -> Program:
    return dataclasses.replace(program, channels=tuple(
        dataclasses.replace(channel, shares_data=channel.name == name) for channel in program.channels))


def test_a_channel_that_shares_data_may_read_the_other_s_folder_and_files(
        tmp_path: Path, program: Program) -> None:
    """As AWS's MNIST examples give training and testing one prefix, the script picking its files
    by name: declared in the manifest, the same folder or the same files pass; undeclared, the
    refusal says how to declare it (above)."""
    folder = tmp_path / "data"
    _write(folder / "a.csv", "1,0.5\n")
    sharing = _sharing(program, "validation")
    check_local_channels(_inputs(train=folder, validation=folder), sharing)
    _write(tmp_path / "copy" / "a.csv", "1,0.5\n")
    check_local_channels(_inputs(train=folder, validation=tmp_path / "copy"), sharing)
    # Declared on either channel.
    check_local_channels(_inputs(train=folder, validation=folder), _sharing(program, "train"))


def test_a_hugging_face_dataset_s_description_in_both_splits_is_not_shared_data(
        tmp_path: Path, program: Program) -> None:
    """``Dataset.save_to_disk`` writes each split's dataset_info.json (the features, the same in
    every split) beside its data: the same description is no leak; the same data still is."""
    dataset_program = dataclasses.replace(program, channels=tuple(
        dataclasses.replace(channel, extensions=(".arrow", ".json")) for channel in program.channels))
    for split, rows in (("train", "train rows"), ("validation", "held-out rows")):
        _write(tmp_path / split / "data-00000-of-00001.arrow", rows)
        _write(tmp_path / split / "dataset_info.json", '{"features": {"label": "int64"}}')
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), dataset_program)
    _write(tmp_path / "validation" / "data-00000-of-00001.arrow", "train rows")
    message = _refusal(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), dataset_program)
    assert "data-00000-of-00001.arrow are the same file" in message


def test_only_files_whose_sizes_collide_across_channels_are_hashed(
        tmp_path: Path, program: Program, monkeypatch: pytest.MonkeyPatch) -> None:
    import smtrain.cli.input_checks as input_checks

    hashed: list[Path] = []
    real = input_checks._sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(input_checks, "_sha256", counting)
    _write(tmp_path / "train" / "a.csv", "1,0.5\n")  # 6 bytes
    _write(tmp_path / "train" / "b.csv", "1,0.55\n")  # 7 bytes, only in train
    _write(tmp_path / "validation" / "c.csv", "2,0.5\n")  # 6 bytes
    _write(tmp_path / "validation" / "d.csv", "2,0.555\n")  # 8 bytes
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), program)
    assert sorted(p.name for p in hashed) == ["a.csv", "c.csv"]


def test_channel_folders_nested_deeper_are_refused(tmp_path: Path, program: Program) -> None:
    # The sample data's own layout, <dir>/<program>/<channel>/, given whole as the train channel:
    # other programs' and the validation split's files would all be read as training data.
    for name in ("digits_mlp", "digits_xgboost"):
        for channel in ("train", "validation"):
            (tmp_path / "sd" / name / channel).mkdir(parents=True)
            (tmp_path / "sd" / name / channel / "digits.csv").write_text(f"{name},{channel}\n")
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "v.csv").write_text("1,2\n")
    inputs = [ChannelInput("train", None, tmp_path / "sd"), ChannelInput("validation", None, tmp_path / "v")]
    with pytest.raises(InputError) as raised:
        check_local_channels(inputs, program)
    assert str(raised.value).startswith(
        f"input train: folder {tmp_path / 'sd'} holds folders named like other channels "
        "(digits_mlp/validation, digits_xgboost/validation)")


def test_empty_files_in_two_channels_are_not_the_same_data(tmp_path: Path, program: Program) -> None:
    """Zero-byte files (an empty partition a Spark or pandas export leaves, a marker file) in both
    channels hash alike but hold no rows to leak from training into validation: they pass (issue
    19, item 11). SageMaker delivers them as they are: in File mode it "downloads the training
    data from S3 to the provisioned ML storage volume" (API reference, ``TrainingInputMode``),
    object by object under the channel's prefix; a zero-byte object is an object like any other."""
    _write(tmp_path / "train" / "part-0.csv", "1,0.5\n2,0.6\n")
    _write(tmp_path / "train" / "part-1.csv", "")
    _write(tmp_path / "validation" / "part-0.csv", "3,0.7\n")
    _write(tmp_path / "validation" / "part-1.csv", "")
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), program)


def test_a_channel_of_empty_files_only_is_not_the_same_data_either(tmp_path: Path, program: Program) -> None:
    """Two channels whose only files are empty are not refused as the same data: whether an
    empty channel can train is the program's to say (it reads the files)."""
    _write(tmp_path / "train" / "empty.csv", "")
    _write(tmp_path / "validation" / "empty.csv", "")
    check_local_channels(_inputs(train=tmp_path / "train", validation=tmp_path / "validation"), program)
