from django.db import models


class Calculation(models.Model):
    """A number submitted on the page, and the task working on it."""

    number = models.IntegerField()
    task_id = models.CharField(max_length=36, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.number} ({self.task_id or 'no task'})"
