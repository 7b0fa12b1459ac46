"""The model: a small MLP classifier whose input normalisation travels with its weights.

``save_model`` writes what a later inference step needs to rebuild it without this training
code's arguments: ``model.pth`` (state dict, normalisation included) and ``model_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.pth"


class DigitsClassifier(nn.Module):  # type: ignore[misc]  # torch is not analysed (pyproject)
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, *, num_features: int, num_classes: int, hidden_units: int) -> None:
        super().__init__()
        self.config = {"num_features": num_features, "num_classes": num_classes,
                       "hidden_units": hidden_units}
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.layers = nn.Sequential(
            nn.Linear(num_features, hidden_units), nn.ReLU(),
            nn.Linear(hidden_units, hidden_units), nn.ReLU(),
            nn.Linear(hidden_units, num_classes),
        )

    def fit_normalisation(self, features: torch.Tensor) -> None:
        self.feature_mean.copy_(features.mean(dim=0))
        std = features.std(dim=0)
        # A feature constant in training (a blank pixel) is only centred, not blown up.
        self.feature_std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers((features - self.feature_mean) / self.feature_std)
        return logits


def save_model(model: DigitsClassifier, model_dir: str | Path) -> None:
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(model.config, indent=2) + "\n")


def load_model(model_dir: str | Path) -> DigitsClassifier:
    """Rebuild a saved model on the CPU, in eval mode."""
    directory = Path(model_dir)
    config = json.loads((directory / CONFIG_FILE).read_text())
    model = DigitsClassifier(**config)
    model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model
