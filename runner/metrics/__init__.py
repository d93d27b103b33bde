"""Metrics, one module per family. Pure numpy (no torch): every function takes predictions
and targets as arrays and returns numbers, intervals or result documents.

- classification: model outputs → top-k predictions (``compact``), hits, accuracies (%).
- intervals: seeded percentile bootstraps, stratified (``accuracy_ci``).
- corruptions: the -C sets' mean top-1, corruption error and ImageNet-C's mCE.
- geo: GeoDE and Dollar Street per region and income quartile.
- results: one result-document builder per classifier task and ``score``, which picks it.
- training: statistics over the seeds of an optimizer's training runs.
"""
