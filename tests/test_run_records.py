"""``neuron-explainer run --records``: latents imported from a delphi cache explained, re-scored
and reported through the command line against the test LLM server, and `RecordsFile`, which
reads a records file one record at a time."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
typer_testing = pytest.importorskip("typer.testing")

from gpt2_tokenizer import write_gpt2_tokenizer  # noqa: E402

from neuron_explainer.cli import app  # noqa: E402
from neuron_explainer.errors import (  # noqa: E402
    FormatError,
    InvalidInputError,
    InvalidRecordError,
)
from neuron_explainer.formats import (  # noqa: E402
    RecordsFile,
    read_records_jsonl,
    write_delphi_cache,
    write_records_jsonl,
)
from neuron_explainer.plugins import default_registry  # noqa: E402
from neuron_explainer.records import (  # noqa: E402
    ActivationRecord,
    NeuronRecord,
    Provenance,
    UnitId,
)
from neuron_explainer.runs import RunStore  # noqa: E402
from neuron_explainer.testing import (  # noqa: E402
    OpenAITestServer,
    OracleResponder,
    number_neuron_record,
)

KEY = "sk-test-records-0123456789"
WORDS = "the cat sat on a mat 7 42 1999 dog house river green blue red Paris London".split()
MODULE = "layers.3"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI uses the process-wide registry: rebuilt per test, no plugins, no cache."""
    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    monkeypatch.delenv("NEURON_EXPLAINER_CACHE", raising=False)
    default_registry.cache_clear()
    yield
    default_registry.cache_clear()


def invoke(*args: str | Path) -> Any:
    return typer_testing.CliRunner().invoke(app, [str(a) for a in args])


def latent_records(tokenizer: Any) -> list[NeuronRecord]:
    """Two SAE latents over 8-token windows of GPT-2 ids: latent 0 fires on numbers, latent 5
    on " cat"; each keeps its firing windows as top records and 30 others as random."""
    rng = random.Random(0)
    windows: list[list[int]] = []
    while len(windows) < 160:
        ids = tokenizer(" " + " ".join(rng.choice(WORDS) for _ in range(10)))["input_ids"][:8]
        if len(ids) == 8:
            windows.append(ids)
    rules = {0: lambda t: 6.0 if t.strip().isdigit() else 0.0, 5: lambda t: 4.0 * (t == " cat")}
    records = []
    for index, rule in rules.items():
        excerpts = []
        for ids in windows:
            tokens = [tokenizer.decode([i]) for i in ids]
            values = [rule(t) for t in tokens]
            excerpts.append(ActivationRecord(tokens=tokens, activations=values, token_ids=ids))
        firing = [e for e in excerpts if max(e.activations) > 0]
        silent = [e for e in excerpts if max(e.activations) == 0]
        assert len(firing) >= 40 and len(silent) >= 30
        records.append(
            NeuronRecord(
                unit=UnitId(model="gpt2", layer=3, index=index, kind="sae_latent"),
                top_records=sorted(firing, key=lambda e: -max(e.activations))[:40],
                random_sample=silent[:30],
                provenance=Provenance(model="gpt2", hook_point=MODULE, window_length=8),
            )
        )
    return records


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``import delphi`` wrote from a delphi cache of `latent_records`."""
    root = tmp_path_factory.mktemp("delphi")
    folder = write_gpt2_tokenizer(root / "gpt2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    write_delphi_cache(latent_records(tokenizer), root / "latents")
    out = root / "imported"
    done = invoke("import", "delphi", root / "latents", "--out", out, "--tokenizer", folder)
    assert done.exit_code == 0, done.output
    return out


def test_run_explains_imported_delphi_records_end_to_end(
    imported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = read_records_jsonl(imported)
    assert [(u.kind, u.layer, u.index) for u in records] == [
        ("sae_latent", 3, 0),
        ("sae_latent", 3, 5),
    ]
    db = tmp_path / "run.sqlite"
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        llm = ["--explainer", "openai:m", "--simulator", "openai:m"]
        estimate = invoke("run", "--records", imported, "--db", db, *llm, "--dry-run")
        assert estimate.exit_code == 0, estimate.output
        assert "dry run" in estimate.output and not db.exists()
        ran = invoke("run", "--records", imported / "records.jsonl", "--db", db, *llm)
        assert ran.exit_code == 0, ran.output
        again = invoke("run", "--records", imported, "--db", db, *llm)  # resumes: nothing to do
        assert again.exit_code == 0 and "skipped" in again.output, again.output
        asked = [m["content"] for r in server.requests for m in r.body.get("messages", [])]
        rescored = tmp_path / "rescored.sqlite"
        missing = invoke("score", "--db", db, "--simulator", "openai:m", "--out-db", rescored)
        assert missing.exit_code == 2 and "score --records" in missing.stderr
        scored = invoke(
            "score", "--db", db, "--simulator", "openai:m", "--out-db", rescored,
            "--records", imported,
        )  # fmt: skip
        assert scored.exit_code == 0, scored.output
    # the prompts named the unit's kind
    assert any("Explanation of SAE latent behavior" in text for text in asked)
    assert any("the SAE latent that finds numbers" in text for text in asked)
    with RunStore(db) as store:
        held = store.meta()["config"]["source"]
        done = {s.unit: store.result(s.unit) for s in store.units("done")}
    assert held["kind"] == "records" and held["name"].startswith("records.jsonl sha256:")
    assert set(done) == set(records)
    latent0 = done[UnitId(model="gpt2", layer=3, index=0, kind="sae_latent")]
    assert latent0 is not None and latent0.explanation.text == "numbers"
    assert latent0.scored is not None and latent0.scored.correlation.value is not None
    assert latent0.scored.correlation.value > 0.5
    with RunStore(rescored) as store:
        assert len(list(store.units("done"))) == 2
    report = invoke("report", "--db", db, "--out", tmp_path / "report.html")
    assert report.exit_code == 0, report.output
    assert "layer 3 sae latent 5" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_run_records_picks_units_and_refuses_other_sources(imported: Path, tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    picked = invoke("run", "--records", imported, "--neurons", "5", "--db", db)
    assert picked.exit_code == 0, picked.output
    with RunStore(db) as store:
        assert [s.unit.index for s in store.units("done")] == [5]
    # the same file resumes; other bytes under the same name are another source
    copy = tmp_path / "copy" / "records.jsonl"
    copy.parent.mkdir()
    copy.write_bytes((imported / "records.jsonl").read_bytes())
    assert invoke("run", "--records", copy, "--neurons", "5", "--db", db).exit_code == 0
    changed = tmp_path / "changed" / "records.jsonl"
    changed.parent.mkdir()
    lines = (imported / "records.jsonl").read_text(encoding="utf-8").splitlines()
    changed.write_text(lines[1] + "\n", encoding="utf-8")
    refused = invoke("run", "--records", changed, "--db", db)
    assert refused.exit_code == 2 and "another configuration" in refused.stderr
    for args, message in (
        ([], "give MODEL (a model to record over --corpus"),
        (["gpt2", "--records", imported], "give MODEL or --records, not both"),
        (["--records", imported, "--corpus", "x.txt"], "--corpus apply to a model only"),
        (["--records", imported, "--window-length", "8"], "--window-length apply to a model"),
        (["--records", imported, "--heads", "1.2"], "--records gives the records already"),
        (["--records", tmp_path / "none.jsonl"], "none.jsonl does not exist"),
    ):
        result = invoke("run", *args, "--db", tmp_path / "other.sqlite")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output


def test_records_file_reads_one_record_at_a_time(tmp_path: Path) -> None:
    records = [
        number_neuron_record(seed=i).model_copy(
            update={"unit": UnitId(model="m", layer=1, index=i)}
        )
        for i in range(3)
    ]
    path = tmp_path / "records.jsonl"
    write_records_jsonl(records, path)
    found = RecordsFile(tmp_path)
    assert found.path == path and len(found) == 3 and list(found) == [r.unit for r in records]
    assert found[records[1].unit] == records[1]
    assert records[2].unit in found and UnitId(model="m", layer=1, index=9) not in found
    assert found.get(UnitId(model="m", layer=1, index=9)) is None
    assert found.name == f"records.jsonl sha256:{found.sha256[:16]}"
    # a record that stopped validating fails its unit, naming the line and the field
    lines = path.read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[1])
    broken["top_records"][0]["activations"] = "x"
    path.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n", encoding="utf-8")
    with pytest.raises(InvalidRecordError, match=r"records.jsonl line 2: top_records\[0\]"):
        RecordsFile(path)[records[1].unit]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"unit": {"model": "m", "layer": 0, "index": 1}}\n[1]\n', r"line 2: .*NeuronRecord"),
        ("{}\n", r"line 1: unit: missing"),
        ('{"unit": {"model": "m", "layer": -1, "index": 1}}\n', r"line 1: unit\.layer"),
        ("\n{not json\n", r"line 2: top level: not valid JSON"),
        (
            '{"unit": {"model": "m", "layer": 0, "index": 1}}\n'
            '{"unit": {"model": "m", "layer": 0, "index": 1}}\n',
            r"line 2: a second record of",
        ),
    ],
)
def test_records_file_refuses_a_malformed_file(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError, match=message):
        RecordsFile(path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        RecordsFile(tmp_path / "none")
