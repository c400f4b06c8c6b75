"""Fixtures the resource-family tests share: the library stack file, and its AwsContext on a
freshly reset moto account (a module that needs another stack defines its own `stack`)."""

from __future__ import annotations

import pytest

import spec
from spec import Stack
from tasks.aws import AwsContext
from tests.conftest import LIBRARY_STACK
from tests.support.servers import MotoServer


@pytest.fixture
def stack() -> Stack:
    return spec.load_stack(LIBRARY_STACK)


@pytest.fixture
def ctx(aws: MotoServer, stack: Stack) -> AwsContext:
    return AwsContext.for_stack(stack)
