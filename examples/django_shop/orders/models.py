from django.db import models


class Order(models.Model):
    total_cents = models.PositiveIntegerField()
    paid_at = models.DateTimeField(null=True)


class Receipt(models.Model):
    """Written by the receipt receiver, once per paid order."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE)
    text = models.TextField()


class AuditEntry(models.Model):
    """Written by the audit receiver, for every order event."""

    event_id = models.CharField(max_length=40, unique=True)
    event_name = models.CharField(max_length=200)
    order = models.ForeignKey(Order, on_delete=models.CASCADE)
