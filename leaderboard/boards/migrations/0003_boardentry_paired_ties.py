"""Board rows keep the paired tie rule's marks (issue 17 item 2): the rank a row shares and its
test against its group's leader, written by boards.services.board_ties_refresh when the board's
rows or their per-image outcomes change. Written by hand (makemigrations could not import the
shared tree mid-edit); equal to what it generates."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('boards', '0002_boardentry_loop_in_sandbox'),
    ]

    operations = [
        migrations.AddField(
            model_name='boardentry',
            name='tie_rank',
            field=models.PositiveIntegerField(blank=True, help_text="The rank this row shares under the paired tie rule (leaderboard/boards/paired.py) among the task's public rows with per-image outcomes: its group leader's position (1: tied with the leader); null where the rule had no outcomes for it. Written by board_ties_refresh.", null=True),
        ),
        migrations.AddField(
            model_name='boardentry',
            name='paired',
            field=models.JSONField(blank=True, default=dict, help_text="The paired test against the row's group leader: leader (submission id), group_size, and for the other members n, b, c, delta (points of top-1), ci, p, p_holm, m."),
        ),
    ]
