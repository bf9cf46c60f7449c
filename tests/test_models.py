from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from neuron_explainer import InvalidInputError  # noqa: E402
from neuron_explainer.models.loading import GPT2_HUB_IDS, hub_id, load_model  # noqa: E402


def test_gpt2_names_map_to_the_hub_repositories() -> None:
    assert hub_id("gpt2") == "openai-community/gpt2"
    assert hub_id("gpt2-xl") == "openai-community/gpt2-xl"
    assert set(GPT2_HUB_IDS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
    assert hub_id("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"


def test_loading_by_hub_name_offline_says_what_was_tried() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"'gpt2' from Hugging Face hub repository "
        r"'openai-community/gpt2'.*pass a local directory",
    ):
        load_model("gpt2", device="cpu")


def test_loads_a_local_directory_in_the_requested_dtype(tmp_path: Path) -> None:
    from gpt2_tokenizer import write_gpt2_tokenizer

    write_gpt2_tokenizer(tmp_path)  # first: its config.json is replaced by the model's
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    loaded = load_model(tmp_path, dtype="float64", device="cpu")
    assert loaded.model.dtype == torch.float64 and not loaded.model.training
    assert loaded.tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert (loaded.name, loaded.dtype, loaded.device) == (str(tmp_path), "float64", "cpu")


def test_model_objects_need_a_tokenizer_and_dtypes_are_checked() -> None:
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=16)
    )
    with pytest.raises(InvalidInputError, match="needs its tokenizer"):
        load_model(model)
    with pytest.raises(InvalidInputError, match="unknown dtype 'float7'"):
        load_model(model, tokenizer=object(), dtype="float7")
    loaded = load_model(model, tokenizer="tok", dtype="bfloat16", device="cpu")
    assert loaded.model.dtype == torch.bfloat16 and loaded.tokenizer == "tok"


# --- GGUF headers -------------------------------------------------------------------------------


def _write_gguf(path: Path, arch: str, **values: int) -> Path:
    import gguf  # a dependency of the package

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.name", "tiny")
    writer.add_token_list(["a", "b", "c"])
    if "block_count" in values:
        writer.add_block_count(values["block_count"])
    if "feed_forward_length" in values:
        writer.add_feed_forward_length(values["feed_forward_length"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_gguf_metadata_reads_scalars_and_strings_but_not_arrays(tmp_path: Path) -> None:
    from neuron_explainer.models.gguf import gguf_metadata, gguf_shape

    path = _write_gguf(tmp_path / "m.gguf", "qwen2", block_count=24, feed_forward_length=4864)
    meta = gguf_metadata(path)
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.name"] == "tiny"
    assert meta["qwen2.block_count"] == 24 and type(meta["qwen2.block_count"]) is int
    assert "tokenizer.ggml.tokens" not in meta
    assert not any(key.startswith("GGUF.") for key in meta)
    assert gguf_shape(path) == ("qwen2", 24, 4864)


def test_gguf_shape_stops_reading_at_the_fields_it_needs(tmp_path: Path) -> None:
    """The vocabulary that follows the shape is never parsed (seconds for a real one): a file
    cut off inside it still gives its shape, while reading every field fails."""
    import gguf

    from neuron_explainer.models.gguf import gguf_metadata, gguf_shape

    path = tmp_path / "cut.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(3)
    writer.add_feed_forward_length(96)
    writer.add_token_list([f"token{i}" for i in range(5000)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut inside the token list
    assert gguf_shape(path) == ("llama", 3, 96)
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        gguf_metadata(path)


def test_gguf_errors_name_the_file_and_say_why(tmp_path: Path) -> None:
    from neuron_explainer.models.gguf import gguf_shape
    from neuron_explainer.models.loading import model_shape

    bert = _write_gguf(tmp_path / "bert.gguf", "bert", block_count=2, feed_forward_length=8)
    with pytest.raises(InvalidInputError, match=r"'.*bert\.gguf': GGUF architecture 'bert' is not"):
        model_shape(bert)
    partial = _write_gguf(tmp_path / "partial.gguf", "llama", block_count=2)
    with pytest.raises(InvalidInputError, match="'my-model': GGUF architecture 'llama' is not"):
        gguf_shape(partial, name="my-model")
    (tmp_path / "text.gguf").write_text("not a gguf file at all", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"cannot read the GGUF header of '.*text\.gguf'"):
        model_shape(tmp_path / "text.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        model_shape(tmp_path / "empty.gguf")
    (tmp_path / "cut.gguf").write_bytes(bert.read_bytes()[:40])
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        model_shape(tmp_path / "cut.gguf")
