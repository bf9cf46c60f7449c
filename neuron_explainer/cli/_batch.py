"""``run``, ``score`` and ``report``: batch runs in a database, re-scoring, HTML reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._collect import echo_unit_stats
from neuron_explainer.cli._model import collection_or_corpus, load_model_step
from neuron_explainer.cli._options import (
    MODEL_OPTIONS,
    Debug,
    Explainer,
    LatentChunkOpt,
    MaxFailedFraction,
    ModelCorpus,
    Quiet,
    RecordsOpt,
    ReviseOpt,
    RunModelArg,
    ScorerOpt,
    Scoring,
    ScoringOpt,
    SensitivityOpt,
    Simulator,
    Split,
    SplitOpt,
    TestSentencesOpt,
    TextField,
    cluster_option,
    hidden_default,
    llm_options,
    recording_options,
)
from neuron_explainer.cli._summary import print_summary
from neuron_explainer.cli._support import (
    Steps,
    Texts,
    bad_input,
    check_components,
    check_range,
    errors,
)
from neuron_explainer.cli._units import (
    DirectionsOpt,
    HeadsOpt,
    HookOpt,
    LatentsOpt,
    SaeOpt,
    batch_units,
)
from neuron_explainer.options import DEFAULT_TEST_SENTENCES

if TYPE_CHECKING:
    from neuron_explainer.formats import RecordsFile
    from neuron_explainer.subjects.collection import Collection

# --- run -----------------------------------------------------------------------------------


@app.command()
@llm_options
@recording_options(*MODEL_OPTIONS)
def run(
    db: Annotated[
        Path,
        hidden_default(
            "--db",
            "The run database (SQLite; created). Rerunning resumes: finished units are skipped.",
        ),
    ],
    model: RunModelArg = None,
    records: RecordsOpt = None,
    layers: Annotated[
        str | None,
        hidden_default(
            "--layers",
            "Layers to explain: 0-3, 5 or 0,2,7 (required to record a model's MLP neurons; "
            "default with a collection: every collected layer).",
        ),
    ] = None,
    neurons: Annotated[
        str | None,
        hidden_default(
            "--neurons",
            "Neurons of each layer (or units of a latent or head collection): 0-99 or 0,5,9 "
            "(default: all).",
        ),
    ] = None,
    sae: SaeOpt = None,
    latents: LatentsOpt = None,
    heads: HeadsOpt = None,
    direction: DirectionsOpt = None,
    hook: HookOpt = None,
    latent_chunk: LatentChunkOpt = None,
    corpus: ModelCorpus = None,
    explainer: Explainer = "token-table",
    simulator: Simulator = "token-table",
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Units explained at the same time.")
    ] = 8,
    budget_usd: Annotated[
        float | None,
        hidden_default(
            "--budget-usd",
            "Stop the run before its estimated LLM cost passes this many USD.",
            min=0.0,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Estimate requests, tokens and cost; call no LLM, need no API key, write no "
            "database (a model is still collected first: the estimate reads its excerpts).",
        ),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run units that failed before again.")
    ] = False,
    cluster: Annotated[
        str | None,
        hidden_default(
            "--cluster",
            "Run each unit's explanation and scoring on the Dask cluster whose scheduler is "
            "at this address (tcp://HOST:PORT); this process reads the records and writes "
            "the database (see docs/cluster.md).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        hidden_default(
            "--workers",
            "Run each unit's explanation and scoring on a local Dask cluster of this many "
            "worker processes (127.0.0.1 only), started and stopped for the run.",
            min=1,
        ),
    ] = None,
    export_jsonl: Annotated[
        Path | None,
        hidden_default(
            "--export-jsonl", "Afterwards, write every result as one JSON line to this file."
        ),
    ] = None,
    export_openai: Annotated[
        Path | None,
        hidden_default(
            "--export-openai",
            "Afterwards, write the explanations in OpenAI's public dataset format here.",
        ),
    ] = None,
    max_failed_fraction: MaxFailedFraction = 0.1,
    scoring: ScoringOpt = Scoring.plain,
    scorer: ScorerOpt = None,
    sensitivity: SensitivityOpt = None,
    revise: ReviseOpt = False,
    test_sentences: TestSentencesOpt = DEFAULT_TEST_SENTENCES,
    *,
    recording: dict[str, Any],
    split: SplitOpt = Split.file,
    text_field: TextField = "text",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Explain many units into a resumable database, then print the summary.

    With --records FILE.jsonl instead of MODEL, the records of that file are explained (what
    import delphi writes; a record is read from the file when its unit runs).

    The units are MLP neurons (--layers, --neurons), an SAE's latents (--sae, --latents),
    attention heads (--heads 3.5,3.7) or directions (--direction F.npy --hook SITE). MODEL is
    first collected over --corpus into the folder <db stem>.collection beside the database
    (resumable), or, when MODEL is a collection folder (of neurons, latents, heads or
    directions), its records are read. Rerun the same command to resume. The summary gives the
    units done, failed and skipped (done before), the LLM tokens and the estimated cost, and
    how many of the collection's units are dead (a dead unit fails with "dead: never activated
    on the corpus"). Exits with 1 when a unit failed or the budget stopped the run.
    """
    with errors(debug):
        from neuron_explainer.runs import explain_neurons

        on_cluster = cluster_option(cluster, workers)
        if latent_chunk is not None:  # collect's option: refused where nothing is collected
            recording["latent_chunk"] = latent_chunk
        check_components(
            explainer=explainer, simulator=simulator, need_key=not dry_run, scorers=scorer
        )
        found = (
            _records_file(model, records, corpus, recording)
            if records is not None or model is None
            else collection_or_corpus(
                model, corpus, recording, split=split.value, text_field=text_field, count=False
            )
        )
        source = _source(model, found, layers, neurons, (sae, latents, heads, hook, direction))
        if source.pop("hook", None) is not None:
            recording["hook"] = hook
        with Steps(quiet) as steps:
            collecting = None
            if isinstance(found, Texts):
                assert model is not None
                source["model"] = load_model_step(steps, model, recording)
                collecting = steps.task("collecting (excerpts)")
                recording["progress"] = collecting.update
            bar = None

            def progress(event: Any) -> None:
                nonlocal bar
                if bar is None:
                    if collecting is not None:
                        collecting.finish()
                    bar = steps.task("explaining (units)", event.total)
                bar.update(event.completed, event.total)

            outcome = explain_neurons(
                db=db,
                explainer=explainer,
                simulator=simulator,
                concurrency=concurrency,
                budget_usd=budget_usd,
                dry_run=dry_run,
                retry_failed=retry_failed,
                collect_options=recording or None,
                explain_options={
                    "max_failed_fraction": max_failed_fraction,
                    "scoring": scoring.value,
                    "sensitivity": "auto" if sensitivity is None else sensitivity,
                    "revise": revise,
                    "test_sentences": test_sentences,
                },
                progress=progress,
                scorers=scorer or None,
                cluster=on_cluster,
                **source,
            )
            if collecting is not None:
                collecting.finish()
        code = print_summary(outcome)
        echo_unit_stats(getattr(outcome, "collection", None))
        if not dry_run:
            _export(db, export_jsonl, export_openai)
        raise typer.Exit(code)


def _records_file(
    model: str | None, records: Path | None, corpus: str | None, recording: dict[str, Any]
) -> RecordsFile:
    """The records of ``--records`` (read one at a time, `RecordsFile`), checked to come
    alone: without MODEL, ``--corpus`` or a recording option.

    Raises:
        InvalidInputError: both or neither of MODEL and ``--records``, a recording option
            with ``--records``, or a records file that cannot be read.
    """
    from neuron_explainer.formats import RecordsFile

    if records is None:
        raise bad_input(
            "give MODEL (a model to record over --corpus, or a collection folder written by "
            "collect) or --records FILE.jsonl (records to explain, e.g. from import delphi)"
        )
    if model is not None:
        raise bad_input(f"give MODEL or --records, not both (got {model} and --records {records})")
    given = ["--corpus"] * (corpus is not None) + ["--" + k.replace("_", "-") for k in recording]
    if given:
        raise bad_input(
            f"--records holds the records already: {', '.join(given)} apply to a model only"
        )
    return RecordsFile(records)


def _source(
    model: str | None,
    found: Collection | Texts | RecordsFile,
    layers: str | None,
    neurons: str | None,
    units: tuple[Path | None, str | None, str | None, str | None, Path | None],
) -> dict[str, Any]:
    """The keyword arguments that tell `explain_neurons` what to explain: MODEL's collection
    folder with ``layers`` and ``neurons`` as given, or the corpus to record MODEL over with them
    checked against MODEL's shape, or with the SAE's latents or the heads of ``units`` (the
    caller adds the model once it is loaded)."""
    from neuron_explainer.formats import RecordsFile
    from neuron_explainer.runs import parse_indices

    if isinstance(found, RecordsFile):
        if any(v is not None for v in units):
            raise bad_input(
                "--sae, --latents, --heads and --hook record a model; --records gives the "
                "records already (pick among them with --layers and --neurons)"
            )
        return {"records": found, "source_name": found.name, "layers": layers, "neurons": neurons}
    if not isinstance(found, Texts):
        if any(v is not None for v in units):
            raise bad_input(
                "--sae, --latents, --heads, --direction and --hook record a model; MODEL is a "
                "collection "
                "(pick its units with --neurons)"
            )
        return {"source": model, "layers": layers, "neurons": neurons}
    chosen = batch_units(layers, *units)
    if chosen:  # hook= goes to collect, with the recording options (see run)
        picked = None if neurons is None else parse_indices(neurons, what="index")
        return {"corpus": found.corpus, "neurons": picked, **chosen}
    assert layers is not None and model is not None
    _, n_layers, n_neurons = check_range(model, [], [])
    return {
        "corpus": found.corpus,
        "layers": parse_indices(layers, limit=n_layers, what="layer"),
        "neurons": None
        if neurons is None
        else parse_indices(neurons, limit=n_neurons, what="neuron"),
    }


def _export(db: Path, jsonl: Path | None, openai: Path | None) -> None:
    from neuron_explainer.runs import RunStore

    if jsonl is None and openai is None:
        return
    with RunStore(db) as store:
        if jsonl is not None:
            typer.echo(f"wrote {store.export_jsonl(jsonl)} results to {jsonl}")
        if openai is not None:
            typer.echo(f"wrote {store.export_openai(openai)} results to {openai}")


# --- score ---------------------------------------------------------------------------------


@app.command()
@llm_options
def score(
    db: Annotated[
        Path,
        hidden_default("--db", "The run database whose explanations are re-scored."),
    ],
    simulator: Annotated[
        str,
        hidden_default(
            "--simulator", "The simulator to score with: a registered name or provider:model."
        ),
    ],
    out_db: Annotated[
        Path | None,
        hidden_default(
            "--out-db",
            "The database the new scores go to; it must differ from --db (default: "
            "<db stem>.rescore-<simulator>.sqlite beside it).",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Units scored at the same time.")
    ] = 8,
    scoring: Annotated[
        Scoring | None,
        typer.Option(
            "--scoring",
            help="plain or contrastive (see explain --help). Default: as the run was scored.",
            show_default=False,
        ),
    ] = None,
    sensitivity: Annotated[
        bool | None,
        typer.Option(
            "--sensitivity/--no-sensitivity",
            help="Measure how much each prediction depends on its explanation. Default: as "
            "the run did.",
            show_default=False,
        ),
    ] = None,
    scorer: ScorerOpt = None,
    records: Annotated[
        Path | None,
        hidden_default(
            "--records",
            "The records the run explained, when it was given --records (a JSONL file or its "
            "folder); a collection is found from the database.",
        ),
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Re-score the explanations of a run database with another simulator.

    The explanations are kept; only the simulations and scores are redone (contrastively with
    --scoring contrastive; with other scorers with --scorer, e.g. --scorer detection, which
    asks the simulator's LLM). Prints the summary.
    """
    with errors(debug):
        from neuron_explainer.formats import RecordsFile
        from neuron_explainer.runs import rescore

        if not db.exists():
            raise bad_input(f"no such run database: {db}")
        check_components(simulator=simulator, scorers=scorer)
        given = None if records is None else RecordsFile(records)
        with Steps(quiet) as steps:
            bar = steps.task("scoring (units)")

            def progress(event: Any) -> None:
                bar.update(event.completed, event.total)

            summary = rescore(
                db,
                simulator,
                out_db=out_db,
                concurrency=concurrency,
                progress=progress,
                scoring=scoring.value if scoring is not None else None,
                sensitivity=sensitivity,
                scorers=scorer or None,
                records=given,
            )
            bar.finish()
        raise typer.Exit(print_summary(summary))


# --- report --------------------------------------------------------------------------------


@app.command()
def report(
    db: Annotated[Path, hidden_default("--db", "The run database to report on.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="The HTML file to write (one self-contained page)."),
    ] = Path("report.html"),
    title: Annotated[
        str | None,
        hidden_default("--title", "The report's title (default: from the run)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Write a static HTML report of a run database: explanations, scores and excerpts."""
    with errors(debug):
        from neuron_explainer.report import write_report
        from neuron_explainer.runs import RunStore

        if not db.exists():
            raise bad_input(f"no such run database: {db}")
        with RunStore(db) as store:
            path = write_report(
                store.results(),
                out,
                title=title or f"neuron_explainer report: {db.stem}",
                failures=store.failures(),
                simulation=store.simulation(),
            )
        typer.echo(str(path))
