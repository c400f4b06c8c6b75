"""Runs moto's own server (`moto_server`'s entry point), loading AWS managed IAM policies
only in the `aws` partition.

With MOTO_IAM_LOAD_MANAGED_POLICIES=true, moto 5.2 builds ~1,600 managed policies for each
of its six partitions (aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-eusc) on every
`/moto-api/reset` and again on the first request after it: 2-5 s per test on two cores.
This project only runs in the `aws` partition, where nothing changes. Should moto's
internals move, the launcher falls back to plain moto.

Each reset also rebuilds the `aws` partition's IAM backend twice (at the reset and at the
first request after it), and each rebuild parses moto's 4.7 MB managed-policy JSON again
(0.1-1 s, depending on the machine's load): the launcher parses it once per server. The
policy objects themselves are still made fresh for each backend (they hold attachment
counts and versions), so every test sees exactly what plain moto gives it.
"""

from __future__ import annotations

import sys
from typing import Any


def _aws_partition_only() -> None:
    try:
        from moto.iam import models as iam_models
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
    _parse_managed_policies_once(iam_models)


def _parse_managed_policies_once(iam_models: Any) -> None:
    """moto's IAM module gets its managed-policy data already parsed. The parsed dicts are only
    read (AWSManagedPolicy.from_data copies what it keeps), so one parse serves every backend."""
    import json

    found = getattr(iam_models, "aws_managed_policies_data", None)
    if not isinstance(found, str) or getattr(iam_models, "json", None) is not json:
        return
    data: str = found
    parsed: dict[str, Any] = {}

    class _ParseOnce:
        def __getattr__(self, name: str) -> Any:
            return getattr(json, name)

        @staticmethod
        def loads(text: Any, *args: Any, **kwargs: Any) -> Any:
            if text is not data or args or kwargs:
                return json.loads(text, *args, **kwargs)
            if not parsed:
                parsed.update(json.loads(text))
            return parsed

    iam_models.json = _ParseOnce()


if __name__ == "__main__":
    _aws_partition_only()
    from moto.server import main

    main()
    sys.exit(0)
