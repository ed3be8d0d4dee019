"""Buyers' decisions on supplier match runs; the admin's search-by-photo page (a proxy)."""


import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0002_refresh_error'),
        ('similarity', '0010_matchrun_same_verdict'),
    ]

    operations = [
        migrations.CreateModel(
            name='PhotoSearch',
            fields=[
            ],
            options={
                'verbose_name': 'search by photo',
                'verbose_name_plural': 'search by photo',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('catalog.article',),
        ),
        migrations.CreateModel(
            name='MatchDecision',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('supplier_ref', models.CharField(max_length=1000)),
                ('decision', models.CharField(choices=[('confirmed', 'Confirmed: this is the article'), ('new', 'New: not in the catalog'), ('skipped', 'Skipped')], max_length=16)),
                ('article_id', models.CharField(blank=True, help_text='Shop id of the confirmed article.', max_length=255)),
                ('verdict', models.CharField(blank=True, help_text="The photo's verdict when the decision was made.", max_length=16)),
                ('decided_by', models.CharField(blank=True, max_length=150)),
                ('decided_at', models.DateTimeField(auto_now=True)),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='decisions', to='similarity.matchrun')),
            ],
            options={
                'ordering': ['run', 'supplier_ref'],
                'constraints': [models.UniqueConstraint(fields=('run', 'supplier_ref'), name='matchdecision_ref')],
            },
        ),
    ]
