"""MODEL as ``explain`` and ``run`` read it: a collection folder, or a model to record over
``--corpus``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from neuron_explainer.cli._support import (
    Steps,
    Texts,
    bad_input,
    check_device,
    load_model_quietly,
    open_corpus,
    read_collection,
)

if TYPE_CHECKING:
    from neuron_explainer.models.loading import LoadedModel
    from neuron_explainer.subjects.collection import Collection


def collection_or_corpus(
    model: str,
    corpus: str | None,
    options: dict[str, Any],
    *,
    split: str,
    text_field: str,
    count: bool = True,
) -> Collection | Texts:
    """What the records of MODEL come from: the collection when MODEL is a collection folder
    (then neither ``--corpus`` nor a model option may be given), else the corpus opened (see
    `open_corpus`) for recording the model, after checking ``options["device"]``.

    Raises:
        InvalidInputError: a corpus or model options with a collection folder, no corpus for
            a model, an unknown device, or an unreadable corpus.
    """
    collection = read_collection(model)
    if collection is not None:
        if corpus is not None or options:
            given = ["--corpus"] * (corpus is not None) + [
                "--" + key.replace("_", "-") for key in options
            ]
            raise bad_input(
                f"{model} is a collection folder, which holds its records already: "
                f"{', '.join(given)} apply to a model only"
            )
        return collection
    if corpus is None:
        raise bad_input(
            "--corpus is required to record a model (or pass a collection folder written by "
            "collect as MODEL)"
        )
    check_device(options.get("device"))
    return open_corpus(corpus, split=split, text_field=text_field, count=count)


def load_model_step(steps: Steps, model: str, options: dict[str, Any]) -> LoadedModel:
    """Load ``model`` in a step of ``steps``, taking its ``device`` and ``dtype`` out of
    ``options`` (the rest are for recording it)."""
    load = {key: options.pop(key) for key in ("device", "dtype") if key in options}
    with steps.step(f"loading {model}"):
        return load_model_quietly(model, **load)
