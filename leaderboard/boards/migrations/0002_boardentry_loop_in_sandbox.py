"""Board rows say when their result's training loop ran in the sandbox beside the submission
(result ``env.loop == "sandbox"``: GPU training tasks), so boards and exports can label them as not
forgery-proof. Existing rows are backfilled from their succeeded job's result."""
from django.db import migrations, models


def backfill(apps, schema_editor):
    entry_model = apps.get_model("boards", "BoardEntry")
    job_model = apps.get_model("submissions", "EvaluationJob")
    sandboxed = job_model.objects.filter(state="succeeded", result__env__loop="sandbox").values_list(
        "task_id", "submission_id")
    for task_id, submission_id in sandboxed.iterator():
        entry_model.objects.filter(task_id=task_id, submission_id=submission_id).update(loop_in_sandbox=True)


class Migration(migrations.Migration):

    dependencies = [
        ("boards", "0001_initial"),
        ("submissions", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="boardentry",
            name="loop_in_sandbox",
            field=models.BooleanField(default=False, help_text=(
                "The training loop ran in the sandbox beside the submission (a GPU training task): not "
                "forgery-proof.")),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
