"""evq in a Django project: add `"evq.contrib.django"` to `INSTALLED_APPS`.

- `settings`: reads `settings.EVQ` (`{"DATABASE": "default"}` or `{"URL": "redis://..."}`).
- `transactions`: `evq.publish()` inside `transaction.atomic()` writes through Django's own
  connection when the queue is in Django's database; `publish(..., on_commit=True)` otherwise.
- `migrations`: `manage.py migrate` creates evq's tables with evq's own schema set-up.
- `apps`: imports every installed app's `subscriptions` module when Django is ready.
- `command`: `manage.py evq ...` and `evq --django-settings ...`, the whole CLI with Django set up.

See docs/django.md.
"""
