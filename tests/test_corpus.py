"""Corpus sources, window cutting and GPT-2 token exactness."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from gpt2_tokenizer import GPT2_EOS, gpt2_tokenizer_fixture  # noqa: F401

from neuron_explainer.errors import FormatError, InvalidInputError, UsageError
from neuron_explainer.records import Provenance
from neuron_explainer.subjects.corpus import (
    Corpus,
    Document,
    Window,
    bos_token_id,
    corpus_from,
    corpus_provenance,
    iter_windows,
)
from neuron_explainer.subjects.tokens import decode_token_bytes, token_strings


def docs(corpus: Corpus) -> list[tuple[int, str]]:
    return [(d.index, d.text) for d in corpus.documents()]


# --- sources -------------------------------------------------------------------------------


def test_text_file_split_modes(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first para\nstill first\n\n \n\nsecond\n\nthird\n")
    assert docs(corpus_from(path)) == [(0, "first para\nstill first\n\n \n\nsecond\n\nthird\n")]
    assert docs(corpus_from(path, split="paragraph")) == [
        (0, "first para\nstill first"),
        (1, "second"),
        (2, "third"),
    ]
    # Lines: the blank lines take indices 2, 3, 4 and 6 and are skipped.
    assert docs(corpus_from(str(path), split="line")) == [
        (0, "first para"),
        (1, "still first"),
        (5, "second"),
        (7, "third"),
    ]
    corpus = corpus_from(path, split="line")
    assert corpus.name == str(path)
    assert docs(corpus) == docs(corpus)  # re-readable


def test_empty_documents_are_skipped_but_keep_their_index() -> None:
    corpus = corpus_from(["a", "", "  \n\t", "b", " c "])
    assert docs(corpus) == [(0, "a"), (3, "b"), (4, " c ")]


def test_folder_reads_text_and_jsonl_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("from b/z")
    (tmp_path / "a.txt").write_text("from a")
    (tmp_path / "c.jsonl").write_text('{"text": "c1"}\n\n{"text": "c2", "id": 7}\n')
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"text": "d1"}) + "\n")
    (tmp_path / "e.txt").write_text("   ")  # empty: index 5, skipped
    (tmp_path / "notes.md").write_text("not read")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("not read")
    corpus = corpus_from(tmp_path)
    assert docs(corpus) == [(0, "from a"), (1, "from b/z"), (2, "c1"), (3, "c2"), (4, "d1")]
    assert corpus.details["files"] == 5


def test_jsonl_text_field_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"body": "one"}\n{"body": "two"}\n')
    assert docs(corpus_from(path, text_field="body")) == [(0, "one"), (1, "two")]
    with pytest.raises(FormatError, match=r"docs\.jsonl, line 1: expected a JSON object"):
        list(corpus_from(path).documents())
    path.write_text('{"text": "ok"}\nnot json\n')
    corpus = corpus_from(path)
    with pytest.raises(FormatError, match=r"docs\.jsonl, line 2: not JSON"):
        list(corpus.documents())
    path.write_text('{"text": "ok"}\n["text"]\n')
    with pytest.raises(FormatError, match="line 2"):
        list(corpus_from(path).documents())


def test_gzip_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"text": "naïve"}\n{"text": ""}\n{"text": "café"}\n')
    assert docs(corpus_from(path)) == [(0, "naïve"), (2, "café")]


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        corpus_from(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"no \.txt"):
        corpus_from(tmp_path / "empty")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(FormatError, match="not valid utf-8"):
        list(corpus_from(latin).documents())
    assert docs(corpus_from(latin, encoding="latin-1")) == [(0, "café")]
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInputError, match=r"cannot read .*broken\.txt\.gz"):
        list(corpus_from(broken).documents())
    with pytest.raises(InvalidInputError, match="split must be one of"):
        corpus_from(latin, split="sentence")  # type: ignore[arg-type]


def test_iterables_callables_and_one_shot_iterators() -> None:
    texts = ["alpha", "beta"]
    assert (
        docs(corpus_from(texts)) == docs(corpus_from(tuple(texts))) == [(0, "alpha"), (1, "beta")]
    )
    listed = corpus_from(texts, name="greek")
    assert listed.name == "greek"
    assert docs(listed) == docs(listed)

    def load() -> list[str]:
        return texts

    from_callable = corpus_from(load)
    assert docs(from_callable) == docs(from_callable) == [(0, "alpha"), (1, "beta")]
    assert "load" in from_callable.name

    once = corpus_from(t for t in texts)
    assert docs(once) == [(0, "alpha"), (1, "beta")]
    with pytest.raises(UsageError, match="pass a list, or a callable"):
        once.documents()

    rows = [{"text": "x", "id": 1}, {"text": "y", "id": 2}]
    assert docs(corpus_from(rows)) == [(0, "x"), (1, "y")]
    with pytest.raises(InvalidInputError, match="item 0 has no field 'body'"):
        list(corpus_from(rows, text_field="body").documents())
    with pytest.raises(InvalidInputError, match="item 1 is a int, not text"):
        list(corpus_from(["ok", 3]).documents())


def test_other_sources() -> None:
    corpus = corpus_from(["a"], name="first")
    assert corpus_from(corpus) is corpus
    renamed = corpus_from(corpus, name="second")
    assert renamed.name == "second"
    assert docs(renamed) == [(0, "a")]
    with pytest.raises(InvalidInputError, match="from a bytes; pass a list of str"):
        corpus_from(b"text")
    with pytest.raises(InvalidInputError, match="from a dict; pass a list of str"):
        corpus_from({"text": ["a", "b"]})
    with pytest.raises(InvalidInputError, match="cannot read documents from a int"):
        corpus_from(42)
    custom = Corpus("custom", lambda: [Document(5, "five"), Document(6, " ")])
    assert docs(custom) == [(5, "five")]


def test_hugging_face_datasets() -> None:
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"text": ["one", " ", "three"], "id": [1, 2, 3]})
    corpus = corpus_from(dataset)
    assert docs(corpus) == docs(corpus) == [(0, "one"), (2, "three")]
    assert corpus.details == {"source": "datasets", "text_field": "text", "split": None}
    streamed = corpus_from(dataset.to_iterable_dataset(), name="stream")
    assert (streamed.name, docs(streamed)) == ("stream", [(0, "one"), (2, "three")])
    with pytest.raises(InvalidInputError, match="no column 'body'"):
        corpus_from(dataset, text_field="body")
    with pytest.raises(InvalidInputError, match=r"dataset\['train'\]"):
        corpus_from(datasets.DatasetDict(train=dataset))


# --- windows -------------------------------------------------------------------------------

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 9,
    "Short one.",
    "",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 and more numbers 21 22 23.",
    "A line\nanother line\n\n\tindented <|endoftext|> literal " * 5,
]


def encode(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
        "input_ids"
    ]
    return ids


def by_document(windows: list[Window]) -> dict[int, list[Window]]:
    grouped: dict[int, list[Window]] = {}
    for window in windows:
        grouped.setdefault(window.document, []).append(window)
    return grouped


@pytest.mark.parametrize("length", [1, 7, 16, 64])
def test_windows_cut_each_document_exactly(gpt2_tokenizer: Any, length: int) -> None:
    windows = list(iter_windows(corpus_from(TEXTS), gpt2_tokenizer, length=length))
    assert [(w.document, w.start) for w in windows] == sorted(
        (w.document, w.start) for w in windows
    )
    grouped = by_document(windows)
    assert sorted(grouped) == [0, 1, 3, 4]  # the empty document has no window
    for index, group in grouped.items():
        ids = encode(gpt2_tokenizer, TEXTS[index])
        assert [w.start for w in group] == list(range(0, len(ids), length))
        assert [i for w in group for i in w.excerpt_ids] == ids
        assert all(len(w.input_ids) == length for w in group[:-1])
        assert 1 <= len(group[-1].input_ids) <= length
        assert all(w.n_prefix == 0 and w.input_ids == w.excerpt_ids for w in group)
    total = sum(len(encode(gpt2_tokenizer, t)) for t in TEXTS)
    assert sum(len(w.excerpt_ids) for w in windows) == total


def test_windows_are_deterministic_and_independent_of_batching(gpt2_tokenizer: Any) -> None:
    corpus = corpus_from(TEXTS)
    first = list(iter_windows(corpus, gpt2_tokenizer, length=8))
    assert list(iter_windows(corpus, gpt2_tokenizer, length=8)) == first
    assert list(iter_windows(corpus, gpt2_tokenizer, length=8, batch_documents=1)) == first
    resumed = list(iter_windows(corpus, gpt2_tokenizer, length=8, from_document=3))
    assert resumed == [w for w in first if w.document >= 3]


def test_min_length_drops_short_last_windows(gpt2_tokenizer: Any) -> None:
    corpus = corpus_from(["word" + " word" * 9])  # 10 tokens
    assert [len(w.input_ids) for w in iter_windows(corpus, gpt2_tokenizer, length=4)] == [4, 4, 2]
    kept = iter_windows(corpus, gpt2_tokenizer, length=4, min_length=3)
    assert [len(w.input_ids) for w in kept] == [4, 4]


def test_bos_policies(gpt2_tokenizer: Any) -> None:
    corpus = corpus_from(["word" + " word" * 9, "Hi"])
    ids = encode(gpt2_tokenizer, "word" + " word" * 9)
    assert bos_token_id(gpt2_tokenizer) == GPT2_EOS

    document = list(iter_windows(corpus, gpt2_tokenizer, length=4, bos="document"))
    assert [(w.document, w.start, w.input_ids, w.n_prefix) for w in document] == [
        (0, 0, (GPT2_EOS, *ids[:3]), 0),
        (0, 4, tuple(ids[3:7]), 0),
        (0, 8, tuple(ids[7:]), 0),
        (1, 0, (GPT2_EOS, 17250), 0),
    ]
    window = list(iter_windows(corpus, gpt2_tokenizer, length=4, bos="window"))
    assert [(w.document, w.start, w.input_ids, w.n_prefix) for w in window] == [
        (0, 0, (GPT2_EOS, *ids[:4]), 1),
        (0, 4, (GPT2_EOS, *ids[4:8]), 1),
        (0, 8, (GPT2_EOS, *ids[8:]), 1),
        (1, 0, (GPT2_EOS, 17250), 1),
    ]
    assert [w.excerpt_ids for w in window] == [
        w.input_ids for w in iter_windows(corpus, gpt2_tokenizer, length=4)
    ]


def test_bos_policy_needs_a_bos_or_eos_token() -> None:
    class NoSpecialTokens:
        bos_token_id = None
        eos_token_id = None

    class EosOnly:  # like Qwen2
        bos_token_id = None
        eos_token_id = 151643

    assert bos_token_id(EosOnly()) == 151643
    with pytest.raises(InvalidInputError, match="neither a BOS nor an EOS"):
        iter_windows(corpus_from(["x"]), NoSpecialTokens(), bos="window")
    with pytest.raises(InvalidInputError, match="bos must be one of"):
        iter_windows(corpus_from(["x"]), EosOnly(), bos="first")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="length must be at least 1"):
        iter_windows(corpus_from(["x"]), EosOnly(), length=0)


def test_one_shot_corpus_fails_on_the_second_pass(gpt2_tokenizer: Any) -> None:
    corpus = corpus_from(iter(["one", "two"]))
    assert len(list(iter_windows(corpus, gpt2_tokenizer))) == 2
    with pytest.raises(UsageError, match="one-shot iterator"):
        iter_windows(corpus, gpt2_tokenizer)


def test_literal_special_token_text_stays_text(gpt2_tokenizer: Any) -> None:
    (window,) = iter_windows(corpus_from(["a <|endoftext|> b"]), gpt2_tokenizer)
    assert window.input_ids == (64, 1279, 91, 437, 1659, 5239, 91, 29, 275)
    assert GPT2_EOS not in window.input_ids
    assert "".join(token_strings(gpt2_tokenizer, window.input_ids)) == "a <|endoftext|> b"


def test_corpus_provenance_fills_provenance(gpt2_tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("text")
    corpus = corpus_from(path, split="line")
    fields = corpus_provenance(corpus, length=64, bos="document", tokenizer=gpt2_tokenizer)
    provenance = Provenance(model="gpt2", **fields)
    assert (provenance.dataset, provenance.window_length, provenance.bos_policy) == (
        str(path),
        64,
        "document",
    )
    assert provenance.extra["corpus"] == {
        "source": "path",
        "split": "line",
        "text_field": "text",
        "files": 1,
        "min_length": 1,
        "bos_token_id": GPT2_EOS,
    }
    assert corpus_provenance(corpus, length=8, bos="none")["extra"]["corpus"]["min_length"] == 1


# --- GPT-2 exactness and token strings -----------------------------------------------------


def test_gpt2_tokenizer_is_exact(gpt2_tokenizer: Any) -> None:
    assert encode(gpt2_tokenizer, "Hello world") == [15496, 995]
    assert encode(gpt2_tokenizer, " Hello") == [18435]
    assert token_strings(gpt2_tokenizer, [15496, 995, GPT2_EOS]) == [
        "Hello",
        " world",
        "<|endoftext|>",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Hello world, this is plain ASCII.",
        "naïve café",
        "emoji 🤖 test",
        "tabs\tand\nnewlines\n",
        "  two leading spaces",
        "Hello , world . I 'm here",
    ],
)
def test_token_strings_round_trip(gpt2_tokenizer: Any, text: str) -> None:
    (window,) = iter_windows(corpus_from([text]), gpt2_tokenizer, length=1024)
    ids = list(window.excerpt_ids)
    assert ids == gpt2_tokenizer.encode(text)
    assert gpt2_tokenizer.decode(ids) == text
    strings = token_strings(gpt2_tokenizer, ids)
    assert len(strings) == len(ids)
    whole = [gpt2_tokenizer.decode([i]) for i in ids]
    if all("\ufffd" not in piece for piece in whole):  # every token is valid UTF-8 alone
        assert strings == whole
        assert "".join(strings) == text


def test_split_characters_read_as_latin1_bytes(gpt2_tokenizer: Any) -> None:
    ids = encode(gpt2_tokenizer, "emoji 🤖 test")
    strings = token_strings(gpt2_tokenizer, ids)
    assert strings == ["em", "oji", " \u00f0\u009f", "\u00a4", "\u0096", " test"]
    assert "".join(strings[2:5]).encode("latin-1") == " 🤖".encode()
    interrobang = token_strings(gpt2_tokenizer, encode(gpt2_tokenizer, "a ‽ b"))
    assert interrobang == ["a", " \u00e2\u0080", "\u00bd", " b"]


def test_decode_token_bytes() -> None:
    assert decode_token_bytes("café".encode()) == "café"
    assert decode_token_bytes(b" \xe2\x80") == " \u00e2\u0080"
    assert decode_token_bytes(b"\xc3\xa9\xe2") == "é\u00e2"  # valid part kept as UTF-8
    assert decode_token_bytes(b"") == ""


def test_sentencepiece_style_tokens() -> None:
    class Pieces:
        added_tokens_decoder: ClassVar = {2: "<bos>"}
        pieces: ClassVar = {
            2: "<bos>",
            10: "▁Hello",
            11: "▁wor",
            12: "ld",
            13: "<0xE2>",
            14: "<0x41>",
        }

        def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
            return [self.pieces[i] for i in ids]

    assert token_strings(Pieces(), [2, 10, 11, 12, 13, 14]) == [
        "<bos>",
        " Hello",
        " wor",
        "ld",
        "\u00e2",
        "A",
    ]
    with pytest.raises(TypeError, match="convert_ids_to_tokens"):
        token_strings(object(), [1])


def test_importing_corpus_and_tokens_does_not_load_torch() -> None:
    code = (
        "import sys, neuron_explainer.subjects.corpus, neuron_explainer.subjects.tokens\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'datasets'))\n"
        "print(repr(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
