"""Match verdicts are same / similar / new: the run counts `same` (was `duplicate`) and
records whether its candidates were verified with local features."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("similarity", "0009_matchrun_storage"),
    ]

    operations = [
        migrations.RenameField(
            model_name="matchrun", old_name="duplicate_count", new_name="same_count",
        ),
        migrations.AddField(
            model_name="matchrun",
            name="verified",
            field=models.BooleanField(
                default=False,
                help_text="Candidates were verified with local features (evidence in the report).",
            ),
        ),
    ]
