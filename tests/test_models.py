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
