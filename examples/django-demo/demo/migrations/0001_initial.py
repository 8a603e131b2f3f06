from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Calculation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.IntegerField()),
                ("task_id", models.CharField(blank=True, max_length=36)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
