"""Runners report their device and, per dataset, whether it is synthetic and its checksum: the
bare names stored so far become {"name", "synthetic": null, "checksum": null}."""
from django.db import migrations, models


def names_to_holdings(apps, schema_editor):
    RunnerNode = apps.get_model("runners", "RunnerNode")
    for node in RunnerNode.objects.all().only("pk", "datasets"):
        held = [{"name": d, "synthetic": None, "checksum": None} if isinstance(d, str) else d
                for d in node.datasets or []]
        RunnerNode.objects.filter(pk=node.pk).update(datasets=held)


def holdings_to_names(apps, schema_editor):
    RunnerNode = apps.get_model("runners", "RunnerNode")
    for node in RunnerNode.objects.all().only("pk", "datasets"):
        names = [d["name"] if isinstance(d, dict) else d for d in node.datasets or []]
        RunnerNode.objects.filter(pk=node.pk).update(datasets=names)


class Migration(migrations.Migration):

    dependencies = [
        ("runners", "0002_registration_codes"),
    ]

    operations = [
        migrations.AddField(
            model_name="runnernode",
            name="device",
            field=models.CharField(blank=True, help_text='What evaluates, e.g. "cuda:0 NVIDIA H200".', max_length=120),
        ),
        migrations.AlterField(
            model_name="runnernode",
            name="datasets",
            field=models.JSONField(blank=True, default=list, help_text='Datasets it reported holding: [{"name", "synthetic": bool|null, "checksum": str|null}].'),
        ),
        migrations.RunPython(names_to_holdings, holdings_to_names),
    ]
