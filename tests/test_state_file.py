"""The streamed safetensors writer of collection states: files `safe_open` reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

safetensors = pytest.importorskip("safetensors")

from neuron_explainer.subjects._state_file import Blocks, write_safetensors  # noqa: E402


def test_streamed_file_reads_back_as_safetensors_writes_it(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    big = rng.random((7, 3, 5), dtype=np.float32)
    window_major = np.ascontiguousarray(big.transpose(1, 2, 0))  # [3, 5, 7]
    arrays = {
        "a": rng.random((4, 3)),
        "ints": np.arange(9, dtype=np.int64).reshape(3, 3)[:, ::2],  # not contiguous
        "empty": np.zeros((0, 2), np.int64),
        "flags": np.array([True, False, True]),
        "odd": np.arange(3, dtype=np.int32),  # 12 bytes: later offsets not 8-aligned
    }
    streamed = {
        **arrays,
        "blocks": Blocks(
            (7, 3, 5), np.dtype(np.float32),
            lambda start, stop: window_major[:, :, start:stop].transpose(2, 0, 1), rows=3,
        ),
    }  # fmt: skip
    write_safetensors(tmp_path / "mine.safetensors", streamed)
    save_file({**arrays, "ints": np.ascontiguousarray(arrays["ints"]), "blocks": big},
              str(tmp_path / "theirs.safetensors"))  # fmt: skip
    with safe_open(str(tmp_path / "mine.safetensors"), "np") as mine:
        assert sorted(mine.keys()) == sorted(streamed)
        for name, value in {**arrays, "blocks": big}.items():
            got = mine.get_tensor(name)
            assert got.dtype == value.dtype and got.shape == value.shape, name
            np.testing.assert_array_equal(got, value, err_msg=name)
        np.testing.assert_array_equal(mine.get_slice("blocks")[5], big[5])
    with pytest.raises(ValueError, match="float16"):
        write_safetensors(tmp_path / "x", {"h": np.zeros(2, np.float16)})
