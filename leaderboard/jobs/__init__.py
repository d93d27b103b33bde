"""The evaluation job's lifecycle: its transitions (transitions.py), the reaper that releases
stale claims (reaper.py) and the reaper's Celery task (tasks.py). No models: a job is a row of
submissions.EvaluationJob."""
