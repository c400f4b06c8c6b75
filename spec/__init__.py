"""What to build: the stack file's models. Imports pydantic only."""

from spec.loader import StackFileError, load_stack
from spec.stack import Stack

__all__ = ["Stack", "StackFileError", "load_stack"]
