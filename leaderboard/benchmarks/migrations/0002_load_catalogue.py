from django.db import migrations


def load(apps, schema_editor):
    from leaderboard.benchmarks.services import catalogue_load

    catalogue_load(benchmark_model=apps.get_model("benchmarks", "Benchmark"),
                   task_model=apps.get_model("benchmarks", "Task"))


class Migration(migrations.Migration):
    dependencies = [("benchmarks", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
