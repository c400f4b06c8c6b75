"""Runs moto's own server (`moto_server`'s entry point), loading AWS managed IAM policies
only in the `aws` partition.

With MOTO_IAM_LOAD_MANAGED_POLICIES=true, moto 5.2 builds ~1,600 managed policies for each
of its six partitions (aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-eusc) on every
`/moto-api/reset` and again on the first request after it: 2-5 s per test on two cores.
This project only runs in the `aws` partition, where nothing changes. Should moto's
internals move, the launcher falls back to plain moto.
"""

from __future__ import annotations

import sys
from typing import Any


def _aws_partition_only() -> None:
    try:
        from moto.iam.models import IAMBackend
    except ImportError:
        return
    original = getattr(IAMBackend, "_init_aws_policies", None)
    if original is None:
        return

    def _init_aws_policies(self: Any) -> Any:
        if getattr(self, "partition", "aws") != "aws":
            return []
        return original(self)

    IAMBackend._init_aws_policies = _init_aws_policies  # type: ignore[method-assign]


if __name__ == "__main__":
    _aws_partition_only()
    from moto.server import main

    main()
    sys.exit(0)
