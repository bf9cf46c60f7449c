"""Scorers: how well an explanation predicts a unit's activations on held-out records.

* `neuron_explainer.scorers.correlation`: Pearson correlation (pooled top-and-random, random
  only, per sequence), R², absolute deviation explained, and the calibration fitted on the
  calibration split (`fit_calibration`, `score_simulations`).
* `neuron_explainer.scorers.simulation`: score an explanation by simulation: run a `Simulator`
  on the calibration and scored splits, calibrate, correlate (`ascore_explanation`).

Scorers see an explanation and held-out records only, never what the explainer saw.
"""
