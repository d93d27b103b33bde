"""The reference optimizers and the seed methods: plain submission files, listed in baselines.json."""
