"""Which SageMaker training instance types have local NVMe storage: the one table of it.

Why it matters: "Certain Nitro-based instances include local storage, dependent on the instance
type. Local storage volumes are encrypted using a hardware module on the instance. You can't
request a VolumeKmsKeyId when using an instance type with local storage." (SageMaker API
reference, ``ResourceConfig.VolumeKmsKeyId``). So a job on such a type must not name a volume
key (its NVMe volumes are encrypted by the instance: "The data on NVMe instance storage is
encrypted using an XTS-AES-256 block cipher implemented in a hardware module on the instance",
EC2 user guide, "SSD instance store volumes"), and a job on any other type gets the stack key.

Sources, per family:

- the API reference itself (``ResourceConfig.VolumeSizeInGB``): "ML instance families with the
  NVMe-type instance storage include ml.p4d, ml.g4dn, and ml.g5 ... ML instance families that use
  EBS volumes include ml.c5 and ml.p2";
- the EC2 instance type specifications ("Instance store volumes" column; EC2 user guide,
  "Instance store volume limits for EC2 instances"): the ``d`` variants (m5d, c5d, r5d, m6id,
  c6id, r6id), g4dn, g5, g6, g6e, p3dn, p4d, p4de, p5, p5e, trn1 and trn1n carry NVMe instance
  store; m4, m5, m6i, m7i, c4, c5, c5n, c6i, c7i, r5, r6i, t2, t3, p2 and p3 are EBS-only.

Used by the stacks (synth refuses an allowed instance type missing here, and the state machine
sends ``VolumeKmsKeyId`` only for EBS-only types) and by the offline engine's SageMaker rules
(a ``VolumeKmsKeyId`` on an NVMe type is refused, as SageMaker refuses it).
"""

from __future__ import annotations

#: Instance family (``ml.<family>.<size>``) -> whether its instances have local NVMe storage.
NVME_BY_FAMILY: dict[str, bool] = {
    # EBS only
    "m4": False, "m5": False, "m6i": False, "m7i": False,
    "c4": False, "c5": False, "c5n": False, "c6i": False, "c7i": False,
    "r5": False, "r6i": False,
    "t2": False, "t3": False,
    "p2": False, "p3": False,
    # local NVMe instance store
    "m5d": True, "m6id": True, "c5d": True, "c6id": True, "r5d": True, "r6id": True,
    "g4dn": True, "g5": True, "g6": True, "g6e": True,
    "p3dn": True, "p4d": True, "p4de": True, "p5": True, "p5e": True,
    "trn1": True, "trn1n": True,
}


class UnknownInstanceStorage(KeyError):
    """The instance type's family is not in :data:`NVME_BY_FAMILY`."""


def family(instance_type: str) -> str:
    """``ml.g5.2xlarge`` -> ``g5``."""
    parts = instance_type.split(".")
    if len(parts) != 3 or parts[0] != "ml":
        raise UnknownInstanceStorage(f"{instance_type!r} is not a SageMaker instance type "
                                     "(ml.<family>.<size>)")
    return parts[1]


def has_local_nvme(instance_type: str) -> bool:
    """Whether ``instance_type`` has local NVMe storage; raises :class:`UnknownInstanceStorage`
    for a family the table does not know (never guesses: a wrong guess is a refused job)."""
    name = family(instance_type)
    if name not in NVME_BY_FAMILY:
        raise UnknownInstanceStorage(
            f"{instance_type}: family {name!r} is not in smtrain/core/instance_storage.py's NVMe table "
            f"(known: {', '.join(sorted(NVME_BY_FAMILY))}); add it there with its source")
    return NVME_BY_FAMILY[name]
