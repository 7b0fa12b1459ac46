"""The offline engine reads each botocore service model once per process (smtrain/local/botocore_data.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

#: Counts the EC2 service model's reads while the engine is imported, in a new process (this
#: one shares its loader already, tests/conftest.py).
_COUNT_READS = """
import json, sys
import botocore.loaders
reads = []
read = botocore.loaders.JSONFileLoader._load_file
def counting(self, path, *args, **kwargs):
    data = read(self, path, *args, **kwargs)
    if data is not None and "/ec2/" in path and "/service-2.json" in path:
        reads.append(path)
    return data
botocore.loaders.JSONFileLoader._load_file = counting
import smtrain.local.engine
import boto3
first, second = boto3.Session(), boto3.Session()
print(json.dumps({
    "ec2_model_reads": len(reads),
    "moto_ec2_loaded": "moto.ec2.models.availability_zones_and_regions" in sys.modules,
    "one_loader": first._session.get_component("data_loader") is second._session.get_component("data_loader")
                  is botocore.loaders.create_loader() is botocore.loaders.create_loader(None),
    "regions": len(second.get_available_regions("ec2")) > 10,
}))
"""


def test_importing_the_engine_reads_the_ec2_model_once_and_sessions_share_a_loader() -> None:
    """moto's EC2 models (which its Step Functions interpreter imports) build their region
    table with three new sessions: with one loader, botocore's EC2 model is read once, not
    three times, and later sessions answer from the same loader."""
    result = subprocess.run([sys.executable, "-c", _COUNT_READS], capture_output=True, text=True,
                            cwd=ROOT, check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"ec2_model_reads": 1, "moto_ec2_loaded": True, "one_loader": True, "regions": True}
