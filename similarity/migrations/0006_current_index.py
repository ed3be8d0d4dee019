# The published build as a database fact (issue 13: serving from several web nodes).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('similarity', '0005_duplicatedecision_deactivated'),
    ]

    operations = [
        migrations.CreateModel(
            name='CurrentIndex',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('build_name', models.CharField(max_length=128)),
                ('published_at', models.DateTimeField()),
                ('build', models.ForeignKey(blank=True, help_text='The build record that published it (empty for a switch back to an old build).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='similarity.indexbuild')),
            ],
            options={
                'verbose_name': 'current index',
                'verbose_name_plural': 'current index',
            },
        ),
    ]
