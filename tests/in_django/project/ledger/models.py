from django.db import models


class Order(models.Model):
    paid = models.BooleanField(default=False)


class Receipt(models.Model):
    order = models.OneToOneField(Order, on_delete=models.CASCADE)
    event_id = models.CharField(max_length=40)


class AuditEntry(models.Model):
    text = models.CharField(max_length=200)
