"""Write the stored-format fixtures of the library just before units named their SAE
(`UnitId.source`): result format 7, run-database schema 4, records JSONL.

Run once, with the library at commit 30fb894 (the last commit before `UnitId.source`), from
the repository root: ``git archive 30fb894 | tar -x -C /tmp/old`` then
``PYTHONPATH=/tmp/old python tests/data/before_unit_sources/make_fixtures.py``. The files it
writes are committed; tests/test_unit_sources.py reads and migrates them with the current
library. Do not rerun it with a newer library.

What it writes (no model is run; the records are synthetic, made by
`neuron_explainer.testing.number_neuron_record`):

* ``records.jsonl``: five records of model ``"tiny-gpt2"``: SAE latents 3 and 4 at
  ``blocks.1.hook_resid_pre`` whose provenance names their SAE's sha256 (as a collection writes
  it, `SAE_SHA256`), latent 1 at ``blocks.0.hook_resid_post`` whose provenance names the SAE's
  path only (as ``explain_neuron(model, sae=, latent=)`` writes it), attention head 2 of layer
  1 and MLP neuron 0 of layer 1; latent 4 has too few excerpts to explain;
* ``run.sqlite``: a run database (schema 4) explaining them with the token-table baseline
  (latent 4 failed, the others done);
* ``result.json``: latent 3's result (format 7).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "tiny-gpt2"
SAE_SHA256 = "5ae" + "0123456789abcdef" * 3 + "0123456789abc"
SAE_FACTS = {
    "layout": "saelens",
    "kind": "sae_latent",
    "activation": "relu",
    "d_in": 32,
    "d_sae": 16,
}


def records() -> list:
    from neuron_explainer.records import NeuronRecord, Provenance, UnitId
    from neuron_explainer.testing import number_neuron_record

    def made(unit: UnitId, seed: int, hook: str, extra: dict, keep: int | None = None) -> NeuronRecord:
        record = number_neuron_record(seed=seed)
        if keep is not None:
            record = record.model_copy(
                update={"top_records": record.top_records[:keep], "random_sample": ()}
            )
        provenance = Provenance(model=MODEL, hook_point=hook, window_length=16, extra=extra)
        return record.model_copy(update={"unit": unit, "provenance": provenance})

    site = "blocks.1.hook_resid_pre"
    collected = {
        "unit": {
            "sae": {
                **SAE_FACTS,
                "path": "/saes/res-16k",
                "hook_site": site,
                "sha256": SAE_SHA256,
                "of": "cfg.json+sae_weights.safetensors",
            }
        }
    }
    single = {
        "unit": {
            "sae": {**SAE_FACTS, "path": "/saes/res-other", "hook_site": "blocks.0.hook_resid_post"}
        }
    }
    latent = "sae_latent"
    return [
        made(UnitId(model=MODEL, layer=1, index=3, kind=latent, site=site), 3, site, collected),
        made(UnitId(model=MODEL, layer=1, index=4, kind=latent, site=site), 4, site, collected, 2),
        made(
            UnitId(model=MODEL, layer=0, index=1, kind=latent, site="blocks.0.hook_resid_post"),
            1,
            "blocks.0.hook_resid_post",
            single,
        ),
        made(UnitId(model=MODEL, layer=1, index=2, kind="attention_head"), 2, "h", {}),
        made(UnitId(model=MODEL, layer=1, index=0), 0, "transformer.h.1.mlp.act", {}),
    ]


def main() -> None:
    import neuron_explainer
    from neuron_explainer import explain_neurons
    from neuron_explainer.formats import write_records_jsonl
    from neuron_explainer.runs import RunStore

    print("library:", neuron_explainer.__file__)
    for name in ("records.jsonl", "run.sqlite", "result.json"):
        (HERE / name).unlink(missing_ok=True)
    made = records()
    write_records_jsonl(made, HERE / "records.jsonl")
    summary = explain_neurons(
        records={r.unit: r for r in made},
        db=HERE / "run.sqlite",
        explainer="token-table",
        simulator="token-table",
        source_name="before-unit-sources",
    )
    print(summary)
    with RunStore(HERE / "run.sqlite") as store:
        result = store.result(made[0].unit)
    assert result is not None
    (HERE / "result.json").write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
