"""The model cache: a ``.gguf`` file loads from its dequantised copy with the same weights and
tokenization as from the file, keyed by the file's sha256, written atomically, and never
trusted half-written. A tiny Llama GGUF (Q8_0 weights, a sentencepiece vocabulary) written here
stands in for a real one; ``tests/test_gemma_slow.py`` checks the real Gemma 3 270M."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from neuron_explainer.models import _cache  # noqa: E402
from neuron_explainer.models.loading import (  # noqa: E402
    MODEL_CACHE_ENV,
    LoadedModel,
    load_model,
    model_cache_dir,
)

WORDS = "the cat sat on a mat dog house river green blue red paris london def return".split()
TEXTS = [
    "the cat sat on a mat",
    "  london river\n\tgreen, blue & red!",
    "Ünïcode 🎉 def return",
    "<s>the</s> house",
    "",
]


def write_tiny_llama(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF: Q8_0 matrices, float32 norms, and a sentencepiece ("llama")
    vocabulary of 3 special tokens, 256 byte tokens and the pieces of ``WORDS``."""
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [2, 3, 3, *[6] * 256]
    scores = [0.0] * len(tokens)
    pieces: dict[str, float] = {}
    for word in WORDS:
        spelled = "\u2581" + word
        for end in range(1, len(spelled) + 1):
            pieces.setdefault(spelled[end - 1], 0.0)
            pieces.setdefault(spelled[:end], float(end))
    for piece, score in pieces.items():
        tokens.append(piece)
        types.append(1)
        scores.append(score)
    hidden, ff = 64, 128
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(2)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def add(name: str, *shape: int) -> None:
        values = rng.standard_normal(shape).astype(np.float32) * 0.2
        if len(shape) == 1:
            writer.add_tensor(name, values)
        else:
            quantized = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    add("token_embd.weight", len(tokens), hidden)
    for layer in range(2):
        add(f"blk.{layer}.attn_norm.weight", hidden)
        for part in ("q", "k", "v", "output"):
            add(f"blk.{layer}.attn_{part}.weight", hidden, hidden)
        add(f"blk.{layer}.ffn_norm.weight", hidden)
        add(f"blk.{layer}.ffn_gate.weight", ff, hidden)
        add(f"blk.{layer}.ffn_up.weight", ff, hidden)
        add(f"blk.{layer}.ffn_down.weight", hidden, ff)
    add("output_norm.weight", hidden)
    add("output.weight", len(tokens), hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(autouse=True)
def no_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default at this test's folder: nothing reaches the real user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "env-cache"))
    return tmp_path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    return write_tiny_llama(tmp_path / "models" / "tiny.gguf")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entries(root: Path) -> dict[str, list[str]]:
    """``{sha256 folder: [entry names]}`` under ``root`` (temporary folders included)."""
    return {
        folder.name: sorted(e.name for e in folder.iterdir())
        for folder in sorted(root.iterdir())
        if folder.name != "hashes"
    }


def assert_same(a: LoadedModel, b: LoadedModel) -> None:
    """The same weights and buffers bit for bit, the same outputs, the same tokenization."""
    left, right = a.model.state_dict(), b.model.state_dict()
    assert list(left) == list(right)
    for key in left:
        assert left[key].dtype == right[key].dtype, key
        assert torch.equal(left[key], right[key]), key
    for (name, x), (_, y) in zip(a.model.named_buffers(), b.model.named_buffers(), strict=True):
        assert torch.equal(x, y), name
    assert a.model.config._name_or_path == b.model.config._name_or_path
    assert a.model.generation_config.to_dict() == b.model.generation_config.to_dict()
    for text in TEXTS:
        ids = a.tokenizer(text)["input_ids"]
        assert ids == b.tokenizer(text)["input_ids"], text
        assert a.tokenizer.decode(ids) == b.tokenizer.decode(ids)
        if ids:
            with torch.no_grad():
                batch = torch.tensor([ids])
                assert torch.equal(a.model(batch).logits, b.model(batch).logits)
    assert a.tokenizer.convert_ids_to_tokens(list(range(len(a.tokenizer)))) == (
        b.tokenizer.convert_ids_to_tokens(list(range(len(b.tokenizer))))
    )
    assert a.tokenizer.special_tokens_map == b.tokenizer.special_tokens_map


class Spy:
    """Records the keyword arguments of every ``from_pretrained`` call of the Auto classes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
            original = cls.from_pretrained

            def spy(source: Any, *args: Any, _c: Any = cls, _o: Any = original, **kw: Any) -> Any:
                self.calls.append((_c.__name__, source, kw))
                return _o(source, *args, **kw)

            monkeypatch.setattr(cls, "from_pretrained", staticmethod(spy))

    def read_the_file(self) -> bool:
        return any("gguf_file" in kwargs for _, _, kwargs in self.calls)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cached_load_is_identical_to_loading_the_file(
    dtype: str, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    direct = load_model(tiny, dtype=dtype, device="cpu", cache=False)
    assert not root.exists() and not (tmp_path / "env-cache").exists()
    spy = Spy(monkeypatch)
    cold = load_model(tiny, dtype=dtype, device="cpu", cache=root)
    assert spy.read_the_file()
    digest = sha256(tiny)
    names = entries(root)[digest]
    assert [n.split("-")[:2] for n in names] == [["model", dtype], ["tokenizer", names[1][10:]]]
    model_entry = root / digest / names[0]
    assert (model_entry / "model.safetensors").is_file()
    assert (root / digest / names[1] / "tokenizer.json").is_file()
    manifest = json.loads((model_entry / _cache.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["sha256"] == digest and manifest["source"] == str(tiny)
    assert set(manifest["versions"]) == {"transformers", "torch", "gguf", "tokenizers"}

    spy.calls.clear()
    warm = load_model(tiny, dtype=dtype, device="cpu", cache=root)
    assert spy.calls and not spy.read_the_file()  # the copy, not the .gguf file
    assert {str(source) for _, source, _ in spy.calls} == {
        str(root / digest / name) for name in names
    }
    for loaded in (cold, warm):
        assert loaded.model.dtype == getattr(torch, dtype) and not loaded.model.training
        assert (loaded.name, loaded.dtype, loaded.device) == (str(tiny), dtype, "cpu")
        assert_same(direct, loaded)


def test_each_dtype_has_its_entry_and_the_tokenizer_is_shared(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    load_model(tiny, device="cpu", cache=root)
    load_model(tiny, dtype="bfloat16", device="cpu", cache=root)
    names = entries(root)[sha256(tiny)]
    assert [n.rsplit("-", 1)[0] for n in names] == ["model-bfloat16", "model-float32", "tokenizer"]
    tokenizer = object()  # a tokenizer given is used, and no tokenizer entry is needed
    other = tmp_path / "other"
    assert load_model(tiny, tokenizer=tokenizer, device="cpu", cache=other).tokenizer is tokenizer
    assert [n.split("-")[0] for n in entries(other)[sha256(tiny)]] == ["model"]


def test_where_the_cache_lives_and_how_to_turn_it_off(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "xdg" / "neuron_explainer" / "models"
    monkeypatch.delenv(MODEL_CACHE_ENV)
    assert model_cache_dir() == default == model_cache_dir(True)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "neuron_explainer" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for off in ("0", "false", "OFF", " no "):
        monkeypatch.setenv(MODEL_CACHE_ENV, off)
        assert model_cache_dir() is None
        assert model_cache_dir(True) == default  # the argument wins
    assert model_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv(MODEL_CACHE_ENV, "1")
    assert model_cache_dir() == default and model_cache_dir(False) is None
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "env"))
    assert model_cache_dir() == model_cache_dir(True) == tmp_path / "env"

    monkeypatch.setenv(MODEL_CACHE_ENV, "0")
    load_model(tiny, device="cpu")
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "env").exists()
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "env"))
    load_model(tiny, device="cpu")
    assert list(entries(tmp_path / "env")) == [sha256(tiny)]
    monkeypatch.delenv(MODEL_CACHE_ENV)
    load_model(str(tiny), device="cpu")
    assert list(entries(default)) == [sha256(tiny)]


def test_a_changed_file_never_meets_the_old_entry(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewritten in place with the same size and its old mtime put back, the file is hashed
    again (its ctime moved) and gets its own entry."""
    root = tmp_path / "cache"
    hashed: list[str] = []
    digest_file = _cache.hashlib.file_digest

    def counting(file: Any, name: str) -> Any:
        hashed.append(name)
        return digest_file(file, name)

    monkeypatch.setattr(_cache.hashlib, "file_digest", counting)
    first = load_model(tiny, device="cpu", cache=root)
    load_model(tiny, device="cpu", cache=root)
    assert hashed == ["sha256"]  # remembered by the file's stat
    old, before = sha256(tiny), tiny.stat()
    changed = write_tiny_llama(tmp_path / "changed.gguf", seed=1).read_bytes()
    assert len(changed) == before.st_size
    with tiny.open("r+b") as file:  # in place: same inode, same size
        file.write(changed)
    os.utime(tiny, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert tiny.stat().st_mtime_ns == before.st_mtime_ns
    assert tiny.stat().st_ctime_ns != before.st_ctime_ns  # which no program can set back
    second = load_model(tiny, device="cpu", cache=root)
    assert hashed == ["sha256", "sha256"]
    assert sorted(entries(root)) == sorted([old, hashlib.sha256(changed).hexdigest()])
    embeddings = [x.model.model.embed_tokens.weight for x in (first, second)]
    assert not torch.equal(*embeddings)
    assert_same(load_model(tiny, device="cpu", cache=False), second)


def test_a_write_that_dies_midway_leaves_nothing_that_is_trusted(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    save = _cache._save_model

    def dies_after_saving(model: Any, folder: Path) -> None:
        save(model, folder)
        raise KeyboardInterrupt  # after the weights were written, before the manifest

    monkeypatch.setattr(_cache, "_save_model", dies_after_saving)
    with pytest.raises(KeyboardInterrupt):
        load_model(tiny, device="cpu", cache=root)
    assert entries(root) == {sha256(tiny): []}  # nothing published, the temporary folder gone
    monkeypatch.undo()
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "env-cache"))

    # What kill -9 leaves: a temporary folder with the weights (a fresh one and a stale one).
    full = tmp_path / "full"
    load_model(tiny, device="cpu", cache=full)
    digest = sha256(tiny)
    written = {e.split("-")[0]: full / digest / e for e in entries(full)[digest]}
    folder = root / digest
    for age, name in ((0, ".tmp-model-fresh-1"), (3 * 86400, ".tmp-model-stale-2")):
        leftover = folder / name
        leftover.mkdir()
        weights = (written["model"] / "model.safetensors").read_bytes()
        (leftover / "model.safetensors").write_bytes(weights[: len(weights) // 2])
        os.utime(leftover, (time.time() - age, time.time() - age))
    spy = Spy(monkeypatch)
    loaded = load_model(tiny, device="cpu", cache=root)
    assert spy.read_the_file()  # the leftovers were not taken for an entry
    assert_same(load_model(tiny, device="cpu", cache=False), loaded)
    names = entries(root)[digest]
    assert ".tmp-model-fresh-1" in names and ".tmp-model-stale-2" not in names
    assert sorted(n.split("-")[0] for n in names if not n.startswith(".")) == [
        "model",
        "tokenizer",
    ]


def test_a_broken_entry_is_set_aside_and_rewritten(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    direct = load_model(tiny, device="cpu", cache=False)
    load_model(tiny, device="cpu", cache=root)
    digest = sha256(tiny)
    model_entry = root / digest / entries(root)[digest][0]
    weights = model_entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated: it differs from the manifest
    with pytest.warns(
        RuntimeWarning, match=r"model cache entry .* is unusable .*model\.safetensors"
    ):
        again = load_model(tiny, device="cpu", cache=root)
    assert_same(direct, again)
    manifest = json.loads((model_entry / _cache.MANIFEST).read_text(encoding="utf-8"))
    assert weights.stat().st_size == manifest["files"]["model.safetensors"]  # rewritten
    (model_entry / "config.json").write_text("{not json", encoding="utf-8")  # same size or not
    (model_entry / _cache.MANIFEST).write_text(
        json.dumps({**manifest, "files": {}}), encoding="utf-8"
    )
    with pytest.warns(RuntimeWarning, match="is unusable"):
        assert_same(direct, load_model(tiny, device="cpu", cache=root))
    spy = Spy(monkeypatch)
    assert_same(direct, load_model(tiny, device="cpu", cache=root))  # no warning: filterwarnings
    assert not spy.read_the_file()


def test_an_unwritable_cache_warns_and_still_loads(tiny: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="could not write the model cache entry") as caught:
        loaded = load_model(tiny, device="cpu", cache=blocked)
    assert len(caught) == 2  # the model and the tokenizer
    assert caught[0].filename == __file__  # it points at the caller of load_model
    assert_same(load_model(tiny, device="cpu", cache=False), loaded)
