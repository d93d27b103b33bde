"""The optimizer training track's pieces; its entry points are in runner/tracks/train.py.

- ``tasks.py``: which tasks train a model (the catalogue's ``train`` track) and each one's
  settings (model, augmentation, sandbox memory, corruption set), the budget a job's params name,
  both splits as the parent reads them, and the settings the training harness takes.
- ``loop.py``: the runner's own loop (CPU): the model, data, loss, counters and budget in this
  process, the submitted optimizer in the sandboxed optimizer server (runner/opt_server.py).
- ``launch.py``: the sandboxed training program (CUDA, until the runner's loop covers it): its
  input folder, its run, and the documents it writes.
- ``evaluation.py``: what training left, checked and scored: the per-seed curves, the
  checkpoints (safetensors), test top-1 of each, and CIFAR-10-C for the final weights.

The statistics over seeds (means, intervals, time to target) are in runner/metrics/training.py.
"""
