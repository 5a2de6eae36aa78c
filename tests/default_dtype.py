"""`default_dtype(dtype)`: run a block under another torch default dtype, as a caller's notebook or library may set."""

import contextlib

import torch


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch.set_default_dtype(dtype) for the block, the previous default restored after it (also on failure)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
