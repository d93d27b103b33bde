"""The reference denoisers as submission artifacts, written by `runner baselines denoisers --out
runner/baselines/denoisers` (runner.denoise.baselines.export_baselines); `seed_baselines` submits
them to the denoising boards that need no download."""
