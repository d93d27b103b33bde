import secrets

from django.db import migrations, models

import leaderboard.benchmarks.models


def randomize(apps, schema_editor):
    """AddField gives every existing row the same default: give each its own."""
    Benchmark = apps.get_model("benchmarks", "Benchmark")
    for pk in Benchmark.objects.values_list("pk", flat=True):
        Benchmark.objects.filter(pk=pk).update(board_version=secrets.randbits(62))


class Migration(migrations.Migration):

    dependencies = [
        ("benchmarks", "0002_load_catalogue"),
    ]

    operations = [
        migrations.AddField(
            model_name="benchmark",
            name="board_version",
            field=models.PositiveBigIntegerField(
                default=leaderboard.benchmarks.models.new_board_version, editable=False,
                help_text="Changed (to a random value) whenever a board row of this benchmark changes; part of "
                          "the page cache's keys."),
        ),
        migrations.RunPython(randomize, migrations.RunPython.noop),
    ]
