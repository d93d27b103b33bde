"""Load the catalogue again (runner/catalogue.py; idempotent): a database migrated before
opt-text-transformer joined the catalogue gets its benchmark and task, as 0002 gives a fresh one."""
from django.db import migrations


def load(apps, schema_editor):
    from leaderboard.benchmarks.services import catalogue_load

    catalogue_load(benchmark_model=apps.get_model("benchmarks", "Benchmark"),
                   task_model=apps.get_model("benchmarks", "Task"))


class Migration(migrations.Migration):
    dependencies = [("benchmarks", "0003_board_version")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
