"""Match runs live in the "matching" storage: a folder per run and the published report."""

from django.db import migrations, models


def legacy_folders(apps, schema_editor):
    # Runs made before this migration keep their files where they were written: the upload
    # and report.csv in DATA_DIR/matching/<pk>/, which the default "matching" storage is.
    # Their old thumbnails (MEDIA_ROOT/matching/<pk>/) are no longer shown: delete them
    # (docs/operations.md, "Supplier match runs").
    MatchRun = apps.get_model("similarity", "MatchRun")
    for run in MatchRun.objects.filter(folder=""):
        MatchRun.objects.filter(pk=run.pk).update(folder=str(run.pk), report_file="report.csv")


class Migration(migrations.Migration):

    dependencies = [
        ("similarity", "0008_build_shards"),
    ]

    operations = [
        migrations.AddField(
            model_name="matchrun",
            name="folder",
            field=models.CharField(
                blank=True, max_length=128,
                help_text="The run's folder in the matching storage (its pk and a random part).",
            ),
        ),
        migrations.AddField(
            model_name="matchrun",
            name="report_file",
            field=models.CharField(
                blank=True, max_length=64,
                help_text="The latest published report's name in the folder (empty before one).",
            ),
        ),
        migrations.AlterField(
            model_name="matchrun",
            name="source_file",
            field=models.CharField(help_text="The upload's name in the folder.", max_length=255),
        ),
        migrations.RunPython(legacy_folders, migrations.RunPython.noop),
    ]
