"""The channel reader every shipped program uses (training_code/common/channels.py) on empty
files: SageMaker delivers a zero-byte S3 object as an empty file in the channel's folder (File
mode "downloads the training data from S3 to the provisioned ML storage volume", API reference,
``TrainingInputMode``), so a program must turn it into a ChannelError naming the channel and the
file (which becomes the failure file and the job's FailureReason), never a crash (issue 19,
item 11)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from training_code.common.channels import ChannelError, read_channel


@pytest.mark.parametrize("channel", ["train", "validation"])
def test_an_empty_file_in_either_channel_is_a_channel_error_naming_it(tmp_path: Path, channel: str) -> None:
    for name in ("train", "validation"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "part-0.csv").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy: "input contained no data"
        with pytest.raises(ChannelError) as refused:
            read_channel(tmp_path / channel, channel=channel)
    assert str(refused.value).startswith(f"channel '{channel}': part-0.csv "), refused.value

