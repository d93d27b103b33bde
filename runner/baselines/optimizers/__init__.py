"""The reference optimizers: plain submission files, listed in baselines.json."""
