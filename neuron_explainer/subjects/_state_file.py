"""Writing a collection state as a safetensors file, array by array, without building the
whole file in memory first.

``safetensors.numpy.save_file`` serialises every tensor into one ``bytes`` object and then
writes it: for a state of several hundred MB that is a second full copy, freshly allocated (its
page faults cost as much as the copy). This writer lays out the same format (an 8-byte
little-endian header length, the JSON header padded with spaces to a multiple of 8, then each
tensor's bytes at its ``data_offsets``) and streams the arrays to the file, a block at a time
for those given as `Blocks` (the reservoir, transposed block by block). Files it writes are
read by ``safetensors.safe_open`` (tested).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Blocks", "write_safetensors"]

_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


@dataclass(frozen=True)
class Blocks:
    """An array written in C-order blocks along its first axis: ``block(start, stop)`` returns
    rows ``start:stop`` as a C-contiguous array (``rows`` at a time)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    block: Callable[[int, int], np.ndarray]
    rows: int = 256

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.shape[0], self.rows):
            yield self.block(start, min(start + self.rows, self.shape[0]))


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray | Blocks]) -> None:
    """Write ``tensors`` to ``path`` in the safetensors format (no metadata).

    Raises:
        ValueError: a dtype safetensors has no name for here.
    """
    header: dict[str, object] = {}
    offset = 0
    for name, value in tensors.items():
        dtype = np.dtype(value.dtype)
        if dtype not in _DTYPES:
            raise ValueError(f"cannot write {name}: dtype {dtype} has no safetensors name here")
        size = int(np.prod(value.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {
            "dtype": _DTYPES[dtype],
            "shape": [int(x) for x in value.shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for value in tensors.values():
            for chunk in value.chunks() if isinstance(value, Blocks) else [value]:
                if chunk.size:
                    f.write(np.ascontiguousarray(chunk).data.cast("B"))
