"""notebooks/quickstart.ipynb runs top to bottom (offline), and is committed without outputs."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.helpers import Synthesized
from tests.test_offline_local import MLP_MODEL_FILES

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_runs_top_to_bottom_offline(synthesized: Synthesized, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SMTRAIN_", "MLFLOW_", "AWS_"))}
    env.update({"SMTRAIN_CDK_OUT": str(synthesized.outdir), "SMTRAIN_WORK_DIR": str(tmp_path / "work"),
                "PYTHONPATH": str(ROOT)})
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(previous)
    outputs = "\n".join(str(output.get("text", "")) for cell in notebook.cells
                        if cell.cell_type == "code" for output in cell.outputs)
    assert "nb-train: SUCCEEDED" in outputs and "nb-tune: SUCCEEDED" in outputs
    assert outputs.count('"program": "digits_mlp"') == 2, "each run's output names its program"
    assert "validation:accuracy" in outputs
    assert any("image/png" in output.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for output in cell.outputs)
    assert (tmp_path / "work" / "validation-accuracy.png").is_file()
    # The tuning run of the PyTorch program, from its execution record (what `smtrain status
    # --local` reads): both trials ran, the best one's tuned values are the manifest's ranges, and
    # its model archive carries the serving handler.
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "work" / "executions").glob("nb-tune-*.json")]
    output = json.loads(record["output"])
    assert output["program"] == "digits_mlp" and output["trainingJobCounters"]["Completed"] == 2
    assert set(output["tunedHyperparameters"]) == {"learning-rate", "batch-size"}
    archive = tmp_path / "work" / "s3" / output["modelArtifacts"].removeprefix("s3://")
    with tarfile.open(archive, "r:gz") as packed:
        assert sorted(packed.getnames()) == MLP_MODEL_FILES
