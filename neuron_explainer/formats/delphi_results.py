"""delphi's explanation and score files, read as explanations to re-score and as scores.

Followed from ``delphi/__main__.py`` and ``delphi/log/result_analysis.py`` at tag ``v0.1.1``
(`neuron_explainer.formats.delphi.DELPHI_COMMIT`)::

    {run}/explanations/{module}_latent{i}.txt        orjson.dumps(explanation): a JSON string
    {run}/scores/{scorer}/{module}_latent{i}.txt     a JSON list of ClassifierOutput objects:
        {"str_tokens": [str], "activations": [float], "distance": number,
         "activating": bool, "prediction": bool | null, "probability": float | null,
         "correct": bool | null}

(a score file's ``/`` in the module name is written ``--``). Score files of the classifier
scorers (``detection``, ``fuzz``, ...) are read; delphi's ``simulation`` score files hold
another structure and are refused, naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import PathLike, Where, load_json_file, validate
from neuron_explainer.formats.delphi import DELPHI_VERSION, delphi_unit
from neuron_explainer.records import UnitId
from neuron_explainer.results import ComponentInfo, Explanation

__all__ = ["DelphiScore", "read_delphi_explanations", "read_delphi_scores"]

_NAME = re.compile(r"^(?P<module>.+)_latent(?P<latent>\d+)\.txt$")
DELPHI_EXPLAINER = ComponentInfo(name="delphi", version=DELPHI_VERSION)
"""The explainer named on every explanation read from delphi's files."""


class DelphiScore(BaseModel):
    """One latent's classifier score from delphi's score files.

    Attributes:
        unit: the latent.
        scorer: the scorer's folder name (``"detection"``, ``"fuzz"``).
        examples: how many examples the file holds; judged: how many have a prediction.
        accuracy: the share of judged examples predicted right (``None``: none judged).
        balanced_accuracy: the mean of the recall on activating and on non-activating examples
            (``None`` when either kind was not judged).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: UnitId
    scorer: str
    examples: int = Field(ge=0)
    judged: int = Field(ge=0)
    accuracy: float | None
    balanced_accuracy: float | None


class _Example(BaseModel):
    """A ``ClassifierOutput`` as delphi writes it."""

    model_config = ConfigDict(extra="ignore")

    str_tokens: tuple[StrictStr, ...] = ()
    activating: StrictBool
    prediction: StrictBool | float | None = None
    correct: StrictBool | None = None


class _Examples(BaseModel):
    examples: tuple[_Example, ...]


def _files(folder: Path, what: str) -> list[tuple[Path, str, int]]:
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder (give delphi's {what} folder)")
    found = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match is not None:
            found.append((path, match["module"].replace("--", "/"), int(match["latent"])))
    if not found:
        raise InvalidInputError(f"{folder} holds no {{module}}_latent{{i}}.txt {what} file")
    return found


def read_delphi_explanations(
    explanations_dir: PathLike, *, model: str, kind: str = "sae_latent"
) -> list[tuple[UnitId, Explanation]]:
    """Every explanation of delphi's ``explanations`` folder, with its unit (see `delphi_unit`
    for the layer), in file-name order; the explainer is named ``"delphi"``. Score one with
    any scorer, or explain its unit's records with it as the explanation.

    Raises:
        FormatError: a file that is not a JSON string (naming it).
        InvalidInputError: no such folder or no explanation file in it.
    """
    out = []
    for path, module, latent in _files(Path(explanations_dir), "explanations"):
        text, name = load_json_file(path)
        if not isinstance(text, str) or not text.strip():
            raise FormatError(f"{name}: expected a non-empty JSON string (delphi's explanation)")
        unit = delphi_unit(module, latent, model, kind)
        out.append((unit, Explanation(text=text.strip(), explainer=DELPHI_EXPLAINER)))
    return out


def _score(unit: UnitId, scorer: str, examples: Sequence[_Example]) -> DelphiScore:
    judged = [e for e in examples if e.prediction is not None]
    right = [e for e in judged if bool(e.prediction) == e.activating]
    recalls = []
    for activating in (True, False):
        group = [e for e in judged if e.activating == activating]
        if group:
            recalls.append(sum(bool(e.prediction) == activating for e in group) / len(group))
    return DelphiScore(
        unit=unit,
        scorer=scorer,
        examples=len(examples),
        judged=len(judged),
        accuracy=len(right) / len(judged) if judged else None,
        balanced_accuracy=sum(recalls) / 2 if len(recalls) == 2 else None,
    )


def read_delphi_scores(
    scores_dir: PathLike,
    *,
    model: str,
    kind: str = "sae_latent",
    scorers: Sequence[str] | None = None,
) -> list[DelphiScore]:
    """The classifier scores of delphi's ``scores`` folder (one folder per scorer), by scorer
    then file name. ``prediction`` is read as delphi's analysis reads it (a probability counts
    as its truth value).

    Args:
        scorers: the scorer folders to read (default: every folder but ``simulation``).

    Raises:
        FormatError: a score file that is not a list of classifier outputs (naming the file and
            the JSON path).
        InvalidInputError: no such folder or scorer.
    """
    root = Path(scores_dir)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder (give delphi's scores folder)")
    names = scorers or sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name != "simulation"
    )
    out = []
    for scorer in names:
        for path, module, latent in _files(root / scorer, f"{scorer} score"):
            data, name = load_json_file(path)
            if not isinstance(data, list):
                raise FormatError(
                    f"{name}: expected a list of classifier outputs (delphi's detection or fuzz "
                    "scores); simulation score files are not read"
                )
            read = validate(_Examples, {"examples": data}, Where(name))
            out.append(_score(delphi_unit(module, latent, model, kind), scorer, read.examples))
    return out
