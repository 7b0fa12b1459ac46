"""``train``: what SageMaker runs in the BYOC image (``docker run <image> train``)."""

from __future__ import annotations

import dataclasses
import sys
import traceback

from byoc_training.contract import ContractError, TrainingEnvironment
from byoc_training.hyperparameters import HyperparameterError, Hyperparameters
from byoc_training.trainer import train
from common.channels import ChannelError, read_channel
from common.tracking import Tracker


def main() -> int:
    env = TrainingEnvironment.from_environment()
    try:
        hp = Hyperparameters.from_strings(env.hyperparameters())
        data = {channel: read_channel(env.require_channel(channel), channel=channel)
                for channel in ("train", "validation")}
        with Tracker(params=dataclasses.asdict(hp)) as tracker:
            train(hp, train=data["train"], validation=data["validation"], model_dir=env.model_dir,
                  tracker=tracker)
    except (ContractError, HyperparameterError, ChannelError) as error:
        message = f"{type(error).__name__}: {error}"
        env.write_failure(message)
        print(message, file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # anything else: still tell SageMaker why
        env.write_failure(f"Unexpected {type(error).__name__}: {error}\n{traceback.format_exc()}")
        traceback.print_exc()
        return 2
    print("training finished", flush=True)
    return 0
