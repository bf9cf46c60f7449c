"""The word an LLM prompt uses for the unit being explained: "neuron" for an MLP neuron (the
prompts as they always were), the kind's noun for other units (`UNIT_NOUNS`)."""

from __future__ import annotations

from neuron_explainer.interfaces import current_unit

__all__ = [
    "ANSWER_PREFIX",
    "EXPLANATION_LINE",
    "UNIT_NOUNS",
    "explanation_line",
    "reworded",
    "unit_noun",
]

ANSWER_PREFIX = "the main thing this neuron does is find"
EXPLANATION_LINE = f"Explanation of neuron behavior: {ANSWER_PREFIX}"
UNIT_NOUNS: dict[str, str] = {
    "mlp_neuron": "neuron",
    "attention_head": "attention head",
    "sae_latent": "SAE latent",
    "transcoder_latent": "transcoder latent",
    "direction": "direction",
}
"""What the prompt calls a unit of each kind (`neuron_explainer.records.UNIT_KINDS`; another
kind is a "neuron"). The prompt of an MLP neuron is unchanged; for another kind the word
"neuron" in the system message, the turn headers and the answer prefix becomes its noun."""


def unit_noun() -> str:
    """What the prompt calls the unit being explained (`UNIT_NOUNS` of
    `neuron_explainer.interfaces.current_unit`'s kind; "neuron" outside a run)."""
    unit = current_unit()
    return "neuron" if unit is None else UNIT_NOUNS.get(unit.kind, "neuron")


def reworded(text: str, noun: str) -> str:
    """``text`` (prompt wording, never excerpts) with "neuron" as ``noun``."""
    if noun == "neuron":
        return text
    article = "An" if noun[0] in "aeiouAEIOU" or noun.startswith("SAE") else "A"
    text = text.replace("A neuron", f"{article} {noun}").replace(
        "Neuron", noun[0].upper() + noun[1:]
    )
    return text.replace("neuron", noun)


def explanation_line(noun: str = "neuron") -> str:
    """The line the answer continues (`EXPLANATION_LINE` for a neuron)."""
    return reworded(EXPLANATION_LINE, noun)
