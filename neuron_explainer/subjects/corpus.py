"""Text corpora and the token windows a subject model reads.

`corpus_from` turns a text source into a `Corpus`: a named stream of `Document`s that can be
read again from the start (resuming a collection re-reads and skips). `iter_windows` tokenizes
the documents and cuts each one into windows of at most ``length`` tokens (64 by default)
that never cross a document boundary and are never padded.

Document indices: every candidate document of a source gets the next index, in source order:
each file (``split="file"``), paragraph or line of a text file, each JSONL record, each item
of an iterable or dataset. A document whose text is empty or only whitespace is then skipped,
but its index stays used, so indices never depend on the skip rule. Blank lines of a JSONL file
are not records and take no index.

BOS policies (`BOSPolicy`), recorded with every collection:

* ``"none"``: windows hold text tokens only.
* ``"document"``: the tokenizer's BOS token (its EOS token when it has no BOS; GPT-2's
  ``<|endoftext|>`` = 50256 is both) is put before each document's tokens before cutting, so
  each document's first window starts with it and it is part of that excerpt.
* ``"window"``: every window is read as ``[BOS] + window``; that first position is context
  only (``n_prefix == 1``) and not part of the excerpt.

Text that spells a special token (``"<|endoftext|>"`` inside a document) stays text: documents
are tokenized with ``split_special_tokens=True`` and without added special tokens.

Importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from os import PathLike, fspath
from pathlib import Path
from typing import Any, Literal, get_args

from neuron_explainer.errors import FormatError, InvalidInputError, UsageError

__all__ = [
    "BOSPolicy",
    "Corpus",
    "Document",
    "SplitMode",
    "Window",
    "bos_token_id",
    "corpus_from",
    "corpus_provenance",
    "iter_windows",
]

BOSPolicy = Literal["none", "document", "window"]
SplitMode = Literal["file", "paragraph", "line"]

DEFAULT_WINDOW_LENGTH = 64
"""Excerpt tokens per window unless told otherwise (the subjects and the collector too)."""

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_FOLDER_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
_PARAGRAPH_BREAK = re.compile(r"\n(?:[^\S\n]*\n)+")


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a corpus: its index in the source stream and its text."""

    index: int
    text: str


class Corpus:
    """A named, re-readable stream of documents.

    Build one with `corpus_from`, or subclass and override `documents`.

    Args:
        name: what provenance records as the dataset (a path, a dataset name, ...).
        read: called by each `documents` call; returns the documents in order.
        details: JSON-able facts about the source (kind, split mode, text field, ...).
    """

    def __init__(
        self,
        name: str,
        read: Callable[[], Iterable[Document]],
        *,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._read = read
        self.details: dict[str, Any] = dict(details or {})

    def documents(self) -> Iterator[Document]:
        """Read the documents from the start, skipping empty and whitespace-only ones.

        Raises:
            UsageError: a corpus built from a one-shot iterator is read a second time.
            FormatError: a file does not hold what its name says (bad JSONL line, bad encoding).
            InvalidInputError: a file cannot be read, or an item is not text.
        """
        return (doc for doc in self._read() if doc.text.strip())

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r})"


@dataclass(frozen=True, slots=True)
class Window:
    """A run of consecutive tokens from one document, as the model reads it.

    Attributes:
        document: index of the document it comes from.
        start: offset of its first excerpt token in the document's token sequence (that
            sequence includes the leading BOS under the ``"document"`` policy).
        input_ids: the ids the model reads.
        n_prefix: leading positions that are context only (1 under ``"window"``, else 0).
    """

    document: int
    start: int
    input_ids: tuple[int, ...]
    n_prefix: int = 0

    @property
    def excerpt_ids(self) -> tuple[int, ...]:
        """The ids that belong to the excerpt: ``input_ids`` without the context prefix."""
        return self.input_ids[self.n_prefix :]


def corpus_from(
    source: Any,
    *,
    name: str | None = None,
    text_field: str = "text",
    split: SplitMode = "file",
    encoding: str = "utf-8",
) -> Corpus:
    """Build a `Corpus` from a text source.

    Args:
        source: one of
            * a path (``str`` or path-like) to a text file (any suffix; ``.gz`` is unzipped),
              to a JSONL file (``.jsonl``, ``.ndjson``, optionally ``.gz``: one document per
              line, from ``obj[text_field]``), or to a folder (every ``.txt``, ``.txt.gz``,
              ``.jsonl`` and ``.jsonl.gz`` file below it, recursively, sorted by relative path;
              hidden files and folders are left out);
            * a list, tuple or other re-iterable collection of strings (or of mappings, read
              at ``text_field``);
            * a one-shot iterator or generator of those: it can be read only once;
            * a callable returning such an iterable, called again for each read;
            * a Hugging Face ``datasets.Dataset`` or ``IterableDataset`` (column
              ``text_field``);
            * a `Corpus` (returned as is, renamed when ``name`` is given).
        name: the corpus name recorded in provenance; defaults to the path, the dataset name,
            or a description of the object.
        text_field: the JSON key or dataset column that holds the text.
        split: how a plain text file is cut into documents: ``"file"`` (whole file),
            ``"paragraph"`` (runs of text separated by blank lines) or ``"line"``.
        encoding: text encoding of files.

    Raises:
        InvalidInputError: the path does not exist, a folder holds no text files, ``split`` is
            unknown, a dataset has no ``text_field`` column, or the source is of no known kind.
    """
    if split not in get_args(SplitMode):
        raise InvalidInputError(f"split must be one of {get_args(SplitMode)}, got {split!r}")
    if isinstance(source, Corpus):
        return source if name is None else Corpus(name, source.documents, details=source.details)
    if isinstance(source, str | PathLike):
        return _path_corpus(Path(fspath(source)), name, text_field, split, encoding)
    dataset = _hf_dataset(source, text_field, name)
    if dataset is not None:
        return dataset
    if isinstance(source, bytes | Mapping):
        raise InvalidInputError(
            f"cannot read documents from a {type(source).__name__}; pass a list of str "
            "(e.g. [text] or columns[text_field]), a path, or a Hugging Face dataset"
        )
    label = name or f"<{type(source).__name__}>"
    if callable(source):
        label = name or f"<{getattr(source, '__qualname__', type(source).__name__)}()>"
        return Corpus(label, lambda: _items(source(), text_field), details={"source": "callable"})
    if isinstance(source, Iterator):
        return Corpus(label, _one_shot(source, text_field, label), details={"source": "iterator"})
    if isinstance(source, Iterable):
        return Corpus(label, lambda: _items(source, text_field), details={"source": "iterable"})
    raise InvalidInputError(
        f"cannot read documents from a {type(source).__name__}; pass a path, an iterable of "
        "strings, a callable returning one, or a Hugging Face dataset"
    )


def bos_token_id(tokenizer: Any) -> int:
    """The id a BOS policy puts first: the tokenizer's BOS token, else its EOS token.

    Raises:
        InvalidInputError: the tokenizer has neither.
    """
    for attribute in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    raise InvalidInputError(
        f"{type(tokenizer).__name__} has neither a BOS nor an EOS token; use bos='none'"
    )


def iter_windows(
    corpus: Corpus,
    tokenizer: Any,
    *,
    length: int = DEFAULT_WINDOW_LENGTH,
    bos: BOSPolicy = "none",
    min_length: int = 1,
    batch_documents: int = 64,
    from_document: int = 0,
) -> Iterator[Window]:
    """Tokenize a corpus and yield its windows, in document order and then by ``start``.

    Each document's token ids (under ``bos="document"``: its BOS id followed by its text's ids)
    are cut into consecutive, non-overlapping chunks of ``length`` excerpt tokens; only the
    last chunk of a document may be shorter, and it is kept when it has at least
    ``min_length`` tokens. Nothing is padded.

    Args:
        corpus: the documents (see `corpus_from`).
        tokenizer: a Hugging Face tokenizer, called on lists of texts with
            ``add_special_tokens=False, split_special_tokens=True``.
        length: excerpt tokens per window.
        bos: the BOS policy (see the module docstring).
        min_length: the shortest excerpt kept (for a document's last chunk).
        batch_documents: documents tokenized per tokenizer call.
        from_document: skip, without tokenizing, documents whose index is lower (to resume).

    Raises:
        InvalidInputError: a numeric argument is below 1 (``from_document`` below 0), ``bos``
            is unknown, or the policy needs a BOS token the tokenizer does not have (raised
            by the call itself, before any window).
        FormatError: a document source cannot be read (as `Corpus.documents` raises it).
    """
    if bos not in get_args(BOSPolicy):
        raise InvalidInputError(f"bos must be one of {get_args(BOSPolicy)}, got {bos!r}")
    for label, value in (
        ("length", length),
        ("min_length", min_length),
        ("batch_documents", batch_documents),
    ):
        if value < 1:
            raise InvalidInputError(f"{label} must be at least 1, got {value}")
    if from_document < 0:
        raise InvalidInputError(f"from_document must be at least 0, got {from_document}")
    prefix: tuple[int, ...] = () if bos == "none" else (bos_token_id(tokenizer),)
    docs = (doc for doc in corpus.documents() if doc.index >= from_document)
    return _cut(docs, tokenizer, prefix, bos, length, min_length, batch_documents)


def _cut(
    docs: Iterator[Document],
    tokenizer: Any,
    prefix: tuple[int, ...],
    bos: BOSPolicy,
    length: int,
    min_length: int,
    batch_documents: int,
) -> Iterator[Window]:
    while batch := list(itertools.islice(docs, batch_documents)):
        encoded = tokenizer(
            [doc.text for doc in batch],
            add_special_tokens=False,
            split_special_tokens=True,
            return_attention_mask=False,
        )["input_ids"]
        for doc, ids in zip(batch, encoded, strict=True):
            tokens = [*prefix, *ids] if bos == "document" else list(ids)
            for start in range(0, len(tokens), length):
                chunk = tuple(tokens[start : start + length])
                if len(chunk) < min_length:
                    continue
                if bos == "window":
                    yield Window(doc.index, start, prefix + chunk, n_prefix=1)
                else:
                    yield Window(doc.index, start, chunk)


def corpus_provenance(
    corpus: Corpus,
    *,
    length: int,
    bos: BOSPolicy,
    min_length: int = 1,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """The `Provenance` fields describing how windows were cut from ``corpus``.

    Returns ``dataset``, ``window_length``, ``bos_policy`` and ``extra`` (a dict with key
    ``"corpus"``: the corpus details plus ``min_length`` and, when ``tokenizer`` is given and
    the policy uses one, ``bos_token_id``); pass them on as ``Provenance(**fields, ...)``.

    Raises:
        InvalidInputError: the policy needs a BOS token the tokenizer does not have.
    """
    details: dict[str, Any] = {**corpus.details, "min_length": min_length}
    if tokenizer is not None and bos != "none":
        details["bos_token_id"] = bos_token_id(tokenizer)
    return {
        "dataset": corpus.name,
        "window_length": length,
        "bos_policy": bos,
        "extra": {"corpus": details},
    }


# --- sources -------------------------------------------------------------------------------


def _items(items: Iterable[Any], text_field: str) -> Iterator[Document]:
    for index, item in enumerate(items):
        if isinstance(item, Mapping):
            if text_field not in item:
                raise InvalidInputError(
                    f"item {index} has no field {text_field!r} (fields: {sorted(item)}); "
                    "pass text_field="
                )
            item = item[text_field]
        if not isinstance(item, str):
            raise InvalidInputError(
                f"item {index} is a {type(item).__name__}, not text; documents must be str"
            )
        yield Document(index, item)


def _one_shot(
    iterator: Iterator[Any], text_field: str, label: str
) -> Callable[[], Iterator[Document]]:
    used = False

    def read() -> Iterator[Document]:
        nonlocal used
        if used:
            raise UsageError(
                f"corpus {label} was built from a one-shot iterator and has been read already; "
                "pass a list, or a callable that returns a fresh iterable, to read it again"
            )
        used = True
        return _items(iterator, text_field)

    return read


def _hf_dataset(source: Any, text_field: str, name: str | None) -> Corpus | None:
    """A corpus over a Hugging Face dataset, or ``None`` when ``source`` is not one."""
    datasets = sys.modules.get("datasets")  # a dataset object means the module is loaded
    if datasets is None:
        return None
    if isinstance(source, datasets.DatasetDict | datasets.IterableDatasetDict):
        raise InvalidInputError(
            f"pick one split of the dataset, e.g. dataset[{next(iter(source), 'train')!r}]"
        )
    if not isinstance(source, datasets.Dataset | datasets.IterableDataset):
        return None
    columns = source.column_names
    if columns is not None and text_field not in columns:
        raise InvalidInputError(
            f"the dataset has no column {text_field!r} (columns: {columns}); pass text_field="
        )
    info = getattr(source, "info", None)
    label = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    split = getattr(source, "split", None)
    split = None if split is None else str(split)
    if name is None:
        name = f"{label}:{split}" if label and split else label or f"<{type(source).__name__}>"
    column = source.select_columns([text_field])

    def read() -> Iterator[Document]:
        batches = column.iter(batch_size=1024)  # far faster than one dict per row
        return _items((text for batch in batches for text in batch[text_field]), text_field)

    details = {"source": "datasets", "text_field": text_field, "split": split}
    return Corpus(name, read, details=details)


def _path_corpus(
    path: Path, name: str | None, text_field: str, split: SplitMode, encoding: str
) -> Corpus:
    if not path.exists():
        raise InvalidInputError(
            f"no such file or folder: {path} (to read a string as text, pass [text])"
        )
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.name.endswith(_FOLDER_SUFFIXES)),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        files = [
            p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
        if not files:
            raise InvalidInputError(f"no {', '.join(_FOLDER_SUFFIXES)} files under {path}")
    else:
        files = [path]
    details = {"source": "path", "split": split, "text_field": text_field, "files": len(files)}

    def read() -> Iterator[Document]:
        counter = itertools.count()
        for file in files:
            if file.name.endswith(_JSONL_SUFFIXES):
                texts = _jsonl_texts(file, text_field, encoding)
            else:
                texts = _text_pieces(file, split, encoding)
            for text in texts:
                yield Document(next(counter), text)

    return Corpus(name or str(path), read, details=details)


def _read_lines(path: Path, encoding: str) -> Iterator[str]:
    gz = path.name.endswith(".gz")
    try:
        with gzip.open(path, "rt", encoding=encoding) if gz else path.open(encoding=encoding) as f:
            yield from f
    except UnicodeDecodeError as error:
        raise FormatError(f"{path} is not valid {encoding}: {error}; pass encoding=") from error
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise InvalidInputError(f"cannot read {path}: {error}") from error


def _text_pieces(path: Path, split: SplitMode, encoding: str) -> Iterator[str]:
    if split == "line":
        for line in _read_lines(path, encoding):
            yield line.removesuffix("\n")
        return
    text = "".join(_read_lines(path, encoding))
    if split == "file":
        yield text
    else:
        for paragraph in _PARAGRAPH_BREAK.split(text):
            yield paragraph.removesuffix("\n")


def _jsonl_texts(path: Path, text_field: str, encoding: str) -> Iterator[str]:
    for number, line in enumerate(_read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise FormatError(f"{path}, line {number}: not JSON ({error})") from error
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise FormatError(
                f"{path}, line {number}: expected a JSON object with a string field "
                f"{text_field!r}; pass text_field= to read another field"
            )
        yield record[text_field]
