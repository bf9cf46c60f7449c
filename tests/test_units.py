"""Units beyond MLP neurons (issue 18), one at a time: SAE and transcoder latents, attention
heads and directions recorded by HFSubject, each checked against a hand computation from the
weights on a tiny random GPT-2 and a tiny Llama-shaped (gated MLP, grouped-query attention)
model in float64; UnitId's hook site in stored files; explain_neuron and the CLI flags.

Tolerances: SAE weights are float32 (SAEs are published so; the encoder casts the site's
activation to them), so latents agree with the float64 hand computation to rtol 1e-4 / atol
1e-5; heads and directions are computed in float64 end to end (rtol 1e-9)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from neuron_explainer.errors import DeadUnitError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from gpt2_tokenizer import GPT2_EOS, gpt2_tokenizer_fixture  # noqa: E402, F401

from neuron_explainer import (  # noqa: E402
    ExplanationResult,
    InvalidInputError,
    NeuronRecord,
    UnitId,
    explain_neuron,
)
from neuron_explainer.interfaces import unit_context  # noqa: E402
from neuron_explainer.results import RESULT_FORMAT_VERSION  # noqa: E402
from neuron_explainer.subjects.hf import HFSubject  # noqa: E402

WORDS = "the river city 1999 café report 42 green people shipped years of bridge".split()
D_MODEL, D_SAE = 32, 16
LATENT_RTOL, LATENT_ATOL = 1e-4, 1e-5


def texts(n: int = 24, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) for _ in range(n)]


def tiny(arch: str) -> Any:
    """A tiny random float64 model with GPT-2's vocabulary and eager attention."""
    torch.manual_seed(0)
    if arch == "gpt2":
        config: Any = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=4, n_positions=64)
    else:
        config = transformers.LlamaConfig(
            num_hidden_layers=2,
            hidden_size=D_MODEL,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=GPT2_EOS + 1,
            bos_token_id=GPT2_EOS,
            eos_token_id=GPT2_EOS,
        )
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float64).eval()
    assert model.config.model_type == arch
    return model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request: pytest.FixtureRequest) -> Any:
    return tiny(request.param)


def subject(model: Any, tokenizer: Any, **options: Any) -> HFSubject:
    options = {
        "window_length": 8,
        "batch_size": 5,
        "top_k": 6,
        "n_random": 4,
        "dtype": "float64",
        **options,
    }
    return HFSubject(model, texts(), tokenizer=tokenizer, device="cpu", **options)


def blocks(model: Any) -> Any:
    return model.transformer.h if model.config.model_type == "gpt2" else model.model.layers


def excerpts(record: NeuronRecord) -> list[Any]:
    return [*record.top_records, *record.random_sample]


def run_alone(model: Any, ids: list[int], module: Any = None, read: str = "output") -> Any:
    """Run ``ids`` alone; return (hidden states, attentions, what ``module`` read or wrote)."""
    seen: list[Any] = []
    if module is None:
        handle = None
    elif read == "output":
        handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    else:
        handle = module.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
    finally:
        if handle is not None:
            handle.remove()
    captured = seen[0][0] if seen and isinstance(seen[0], tuple) else (seen[0] if seen else None)
    return out.hidden_states, out.attentions, captured


def check(record_acts: Any, expected: Any, rtol: float, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(record_acts), np.asarray(expected), rtol=rtol, atol=atol)


# --- SAE and transcoder latents ------------------------------------------------------------


def sae_weights(seed: int, d_in: int = D_MODEL) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "W_enc": (rng.normal(size=(d_in, D_SAE)) / np.sqrt(d_in)).astype(np.float32),
        "b_enc": (0.1 * rng.normal(size=D_SAE)).astype(np.float32),
        "W_dec": (rng.normal(size=(D_SAE, d_in)) / np.sqrt(D_SAE)).astype(np.float32),
        "b_dec": (0.2 * rng.normal(size=d_in)).astype(np.float32),
    }


def write_saelens(folder: Path, w: dict[str, Any], **metadata: Any) -> Path:
    """An SAELens 6 folder (standard relu SAE at blocks.1.hook_resid_pre)."""
    meta = {
        "model_name": "tiny",
        "hook_name": "blocks.1.hook_resid_pre",
        "hook_head_index": None,
        "prepend_bos": True,
        "model_from_pretrained_kwargs": {"center_writing_weights": False},
        **metadata,
    }
    cfg = {
        "d_in": int(w["W_enc"].shape[0]),
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "architecture": "standard",
        "metadata": meta,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    safetensors_numpy.save_file(w, folder / "sae_weights.safetensors")
    return folder


def test_sae_latent_matches_a_hand_computation(
    model: Any, gpt2_tokenizer: Any, tmp_path: Path
) -> None:
    w = sae_weights(1)
    folder = write_saelens(tmp_path / "sae", w)
    subj = subject(model, gpt2_tokenizer, sae=folder)
    assert subj.bos == "window"  # prepend_bos=True
    unit = subj.latent_unit(5)
    assert (unit.kind, unit.layer, unit.index, unit.site) == (
        "sae_latent",
        1,
        5,
        "blocks.1.hook_resid_pre",
    )
    record = subj.unit_record(unit)  # latent 5 never fires here: neuron_record refuses it
    with pytest.raises(DeadUnitError):
        subj.neuron_record(unit)
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    for excerpt in excerpts(record):
        hidden, _, _ = run_alone(model, [GPT2_EOS, *excerpt.token_ids])
        resid_pre = hidden[1][0, 1:].numpy()  # hook_resid_pre of block 1; BOS dropped
        pre = (resid_pre - w64["b_dec"]) @ w64["W_enc"][:, 5] + w64["b_enc"][5]
        check(excerpt.activations, np.maximum(pre, 0.0), LATENT_RTOL, LATENT_ATOL)
    assert record.provenance.bos_policy == "window"
    assert record.provenance.hook_point.startswith("blocks.1.hook_resid_pre (")
    sae = record.provenance.extra["unit"]["sae"]  # type: ignore[index,call-overload]
    assert sae["path"] == str(folder) and sae["layout"] == "saelens"


def test_transcoder_latent_matches_a_hand_computation(
    model: Any, gpt2_tokenizer: Any, tmp_path: Path
) -> None:
    """A sparsify top-k transcoder reading the MLP's input of block 0 (its hookpoint
    ``h.0.mlp`` / ``layers.0.mlp``), no b_dec subtracted."""
    w = sae_weights(2)
    name = "h.0.mlp" if model.config.model_type == "gpt2" else "layers.0.mlp"
    folder = tmp_path / "run" / name
    folder.mkdir(parents=True)
    cfg = {"activation": "topk", "num_latents": D_SAE, "k": 4, "transcode": True}
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": D_MODEL}))
    tensors = {
        "encoder.weight": np.ascontiguousarray(w["W_enc"].T),
        "encoder.bias": w["b_enc"],
        "W_dec": w["W_dec"],
        "b_dec": w["b_dec"],
    }
    safetensors_numpy.save_file(tensors, folder / "sae.safetensors")
    subj = subject(model, gpt2_tokenizer, sae=folder)
    assert subj.bos == "none"  # sparsify does not say: the subject's default
    unit = subj.latent_unit(3)
    assert (unit.kind, unit.layer, unit.site) == ("transcoder_latent", 0, f"{name}:input")
    record = subj.neuron_record(unit)
    mlp = blocks(model)[0].mlp
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    for excerpt in excerpts(record):
        _, _, x = run_alone(model, list(excerpt.token_ids), mlp, read="input")
        pre = np.maximum(x[0].numpy() @ w64["W_enc"] + w64["b_enc"], 0.0)
        kth = np.sort(pre, axis=-1)[:, -4][:, None]
        expected = np.where(pre[:, 3] >= kth[:, 0], pre[:, 3], 0.0)
        check(excerpt.activations, expected, LATENT_RTOL, LATENT_ATOL)


def test_sae_settings_that_cannot_be_honoured_are_refused(
    gpt2_tokenizer: Any, tmp_path: Path
) -> None:
    model = tiny("gpt2")
    centred = write_saelens(
        tmp_path / "centred",
        sae_weights(3),
        model_from_pretrained_kwargs={"center_writing_weights": True},
    )
    subj = subject(model, gpt2_tokenizer, sae=centred)
    with pytest.raises(InvalidInputError, match=r"center_writing_weights=True"):
        subj.neuron_record(subj.latent_unit(0))
    plain = write_saelens(tmp_path / "plain", sae_weights(3))
    with pytest.raises(
        InvalidInputError, match=r"prepend_bos=True .*bos='window', not bos='document'"
    ):
        subject(model, gpt2_tokenizer, sae=plain, bos="document")
    with pytest.raises(InvalidInputError, match=r"latent 16 out of range: .* has 16 latents"):
        subject(model, gpt2_tokenizer, sae=plain).latent_unit(16)
    narrow = write_saelens(tmp_path / "narrow", sae_weights(4, d_in=16))
    subj = subject(model, gpt2_tokenizer, sae=narrow)
    with pytest.raises(
        InvalidInputError,
        match=r"reads activations of width 16, but blocks.1.hook_resid_pre is 32 wide",
    ):
        subj.neuron_record(subj.latent_unit(0))
    with pytest.raises(
        InvalidInputError,
        match=r"is an SAE for hook 'blocks.1.hook_resid_pre', not 'blocks.0.hook_resid_pre'",
    ):
        subject(model, gpt2_tokenizer, sae=plain, hook="blocks.0.hook_resid_pre")


# --- attention heads -----------------------------------------------------------------------


def test_attention_head_matches_a_hand_computation(model: Any, gpt2_tokenizer: Any) -> None:
    layer, head = 1, 2
    subj = subject(model, gpt2_tokenizer, bos="window")
    unit = subj.head_unit(layer, head)
    record = subj.neuron_record(unit)
    assert (record.unit.kind, record.unit.site) == ("attention_head", None)
    gpt2 = model.config.model_type == "gpt2"
    block = blocks(model)[layer]
    o_proj = block.attn.c_proj if gpt2 else block.self_attn.o_proj
    weight = o_proj.weight.detach().numpy()
    d_head = D_MODEL // 4
    w_o = (
        weight[head * d_head : (head + 1) * d_head]
        if gpt2
        else weight[:, head * d_head :][:, :d_head].T
    )
    for excerpt in excerpts(record):
        ids = [GPT2_EOS, *excerpt.token_ids]
        _, attentions, z = run_alone(model, ids, o_proj, read="input")
        z_h = z[0, :, head * d_head : (head + 1) * d_head].numpy()
        expected = np.linalg.norm(z_h @ w_o, axis=-1)[1:]
        check(excerpt.activations, expected, 1e-9)
    for excerpt in record.top_records:
        attended = excerpt.attended
        assert attended is not None
        top = int(np.argmax(excerpt.activations))
        _, attentions, _ = run_alone(model, [GPT2_EOS, *excerpt.token_ids])
        probs = attentions[layer][0, head, top + 1].numpy()
        source = int(np.argmax(probs))
        assert attended.position == top
        assert attended.source == (None if source == 0 else source - 1)
        assert attended.source_token == ("<|endoftext|>" if source == 0 else
                                          excerpt.tokens[source - 1])  # fmt: skip
        assert attended.weight == pytest.approx(probs[source], rel=1e-9)
    assert all(r.attended is None for r in record.random_sample)
    with pytest.raises(InvalidInputError, match=r"head 4 out of range: layer 1 has heads 0..3"):
        subj.neuron_record(subj.head_unit(1, 4))


# --- directions ----------------------------------------------------------------------------


def test_direction_matches_a_hand_computation(
    model: Any, gpt2_tokenizer: Any, tmp_path: Path
) -> None:
    vector = np.random.default_rng(5).normal(size=D_MODEL)
    path = tmp_path / "direction.npy"
    np.save(path, vector)
    subj = subject(model, gpt2_tokenizer, direction=path, hook="blocks.0.hook_resid_post")
    unit = subj.direction_unit()
    assert (unit.kind, unit.layer, unit.index) == ("direction", 0, 0)
    record = subj.neuron_record(unit)
    for excerpt in excerpts(record):
        hidden, _, _ = run_alone(model, list(excerpt.token_ids))
        check(excerpt.activations, hidden[1][0].numpy() @ vector, 1e-9)
    direction = record.provenance.extra["unit"]["direction"]  # type: ignore[index,call-overload]
    assert direction["sha256"] == hashlib.sha256(vector.astype("<f8").tobytes()).hexdigest()
    assert direction["path"] == str(path)
    assert "vector" not in record.unit.model_dump()
    np.save(path, vector[:16])
    short = subject(model, gpt2_tokenizer, direction=path, hook="blocks.0.hook_resid_post")
    with pytest.raises(InvalidInputError, match=r"width 16, but blocks.0.hook_resid_post is 32"):
        short.neuron_record(short.direction_unit())
    with pytest.raises(InvalidInputError, match=r"a direction needs its hook site"):
        subject(model, gpt2_tokenizer, direction=path)


# --- stored formats ------------------------------------------------------------------------


def test_unit_site_is_written_only_when_set() -> None:
    old = UnitId(model="gpt2", layer=3, index=7)
    assert json.loads(old.model_dump_json()) == {
        "model": "gpt2",
        "layer": 3,
        "index": 7,
        "kind": "mlp_neuron",
    }
    new = UnitId(model="gpt2", layer=6, index=7, kind="sae_latent", site="blocks.6.hook_resid_pre")
    assert str(new) == "gpt2 layer 6 sae_latent 7 at blocks.6.hook_resid_pre"
    assert UnitId.model_validate_json(new.model_dump_json()) == new
    assert str(old) == "gpt2 layer 3 mlp_neuron 7"


def test_old_results_still_read_and_new_ones_round_trip(
    gpt2_tokenizer: Any, tmp_path: Path
) -> None:
    data = Path(__file__).parent / "data"
    for old in (data / "v1" / "result.json", data / "result_format_5" / "result.json"):
        result = ExplanationResult.model_validate_json(old.read_text(encoding="utf-8"))
        assert result.unit.site is None and result.unit.source is None
        assert result.format_version == RESULT_FORMAT_VERSION
    folder = write_saelens(tmp_path / "sae", sae_weights(1))
    result = explain_neuron(
        tiny("gpt2"),
        sae=folder,
        latent=2,
        corpus=texts(60),
        subject_options={"tokenizer": gpt2_tokenizer, "window_length": 8, "top_k": 12},
    )
    assert result.unit.site == "blocks.1.hook_resid_pre" and result.unit.kind == "sae_latent"
    text = result.model_dump_json()
    assert json.loads(text)["format_version"] == RESULT_FORMAT_VERSION == 8
    assert ExplanationResult.model_validate_json(text) == result


def test_explain_neuron_refuses_a_unit_named_wrongly(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"give layer= and neuron= .*; got latent=, layer="):
        explain_neuron("gpt2", layer=1, latent=3, corpus=["a b"])
    with pytest.raises(InvalidInputError, match=r"got direction="):
        explain_neuron("gpt2", direction=tmp_path / "x.npy", corpus=["a b"])


def test_the_explainer_prompt_names_the_kind() -> None:
    from neuron_explainer.explainers.llm import LLMExplainer
    from neuron_explainer.records import ActivationRecord
    from neuron_explainer.results import PromptScale
    from neuron_explainer.testing.llm import ScriptedLLM

    explainer = LLMExplainer(ScriptedLLM())
    records = [ActivationRecord(tokens=("a", " neuron"), activations=(0.0, 1.0))]
    scale = PromptScale(max_activation=1.0)
    neuron = explainer.messages(records, scale)
    latent = UnitId(model="m", layer=0, index=1, kind="sae_latent", site="blocks.0.hook_resid_pre")
    with unit_context(latent):
        messages = explainer.messages(records, scale)
    with unit_context(UnitId(model="m", layer=0, index=1)):
        assert explainer.messages(records, scale) == neuron
    system, last = messages[0].content, messages[-1].content
    assert "SAE latents in a neural network" in system and "neuron" not in system
    assert last.endswith(
        "Explanation of SAE latent behavior: the main thing this SAE latent does is find"
    )
    assert " neuron" in last  # the excerpt's own token is left alone


# --- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gpt2_tokenizer import write_gpt2_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2-units")
    write_gpt2_tokenizer(folder)
    config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=4, n_positions=64)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def cli(*args: Any) -> Any:
    typer_testing = pytest.importorskip("typer.testing")
    from neuron_explainer.cli import app

    return typer_testing.CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("flags", ["sae", "head", "direction"])
def test_cli_explains_each_kind(
    flags: str, model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts(60)), encoding="utf-8")
    if flags == "sae":
        unit = ["--sae", write_saelens(tmp_path / "sae", sae_weights(1)), "--latent", "4"]
    elif flags == "head":
        unit = ["--head", "1.3"]
    else:
        np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=D_MODEL))
        unit = ["--direction", tmp_path / "d.npy", "--hook", "blocks.1.hook_mlp_out"]
    out = tmp_path / "result.json"
    result = cli(
        "explain", model_folder, *unit, "--corpus", corpus, "--split", "line", "--quiet",
        "--window-length", "8", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = ExplanationResult.model_validate_json(out.read_text(encoding="utf-8"))
    kind = {"sae": "sae_latent", "head": "attention_head", "direction": "direction"}[flags]
    assert saved.unit.kind == kind
    if flags == "head":
        assert (saved.unit.layer, saved.unit.index) == (1, 3)
    if flags == "sae":
        assert saved.provenance.bos_policy == "window"


def test_cli_refuses_a_unit_named_wrongly(model_folder: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c", encoding="utf-8")
    for args, message in (
        (["--sae", tmp_path], "give one unit: --layer and --neuron"),
        (["--head", "1-3"], "--head takes LAYER.HEAD"),
        (["--layer", "1", "--head", "1.3"], "got --head, --layer"),
    ):
        result = cli("explain", model_folder, *args, "--corpus", corpus)
        assert result.exit_code == 2, result.output
        assert message in result.stderr


def test_cli_run_takes_latent_chunk_as_collect_does(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuron_explainer.runs import RunStore
    from neuron_explainer.subjects.collection import Collection

    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts(60)), encoding="utf-8")
    sae = write_saelens(tmp_path / "sae", sae_weights(1))
    small = ["--corpus", corpus, "--split", "line", "--window-length", "8", "--quiet"]
    db = tmp_path / "run.sqlite"
    result = cli(
        "run", model_folder, *small, "--sae", sae, "--latents", "0-4", "--latent-chunk", "2",
        "--db", db,
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    collected = Collection(tmp_path / "run.collection")
    assert [g["chunk"] for g in collected.meta["config"]["units"]] == [2]
    with RunStore(db) as store:
        assert [s.unit.index for s in store.units()] == [0, 1, 2, 3, 4]
    # the same as collect --latent-chunk 2 (one collection config, so one hash)
    out = tmp_path / "collected"
    made = cli("collect", model_folder, *small, "--sae", sae, "--latents", "0-4",
               "--latent-chunk", "2", "--out", out)  # fmt: skip
    assert made.exit_code == 0, made.output
    assert Collection(out).meta["config_hash"] == collected.meta["config_hash"]
    # a collection folder is read, not collected: the option is refused
    refused = cli("run", out, "--latent-chunk", "2", "--db", tmp_path / "r.sqlite")
    assert refused.exit_code == 2, refused.output
    assert "--latent-chunk apply to a model only" in refused.stderr
