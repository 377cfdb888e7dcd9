"""The shop's receivers: imported by evq.contrib.django when Django is ready."""

import logging

import evq
from orders.models import AuditEntry, Order, Receipt

log = logging.getLogger(__name__)


@evq.subscriber("order.paid", retries=3)
def send_receipt(event: evq.Event, /) -> None:
    """Write (and, in a real shop, e-mail) the receipt of a paid order; at most one."""
    order = Order.objects.get(pk=event.payload["order_id"])
    text = f"Receipt for order {order.pk}: {order.total_cents / 100:.2f} paid"
    receipt, created = Receipt.objects.get_or_create(order=order, defaults={"text": text})
    log.info("%s %s", "sent" if created else "already sent", receipt.text)


@evq.subscriber("order.*")
def audit(event: evq.Event, /) -> None:
    """Record every order event once, whatever the number of deliveries."""
    AuditEntry.objects.get_or_create(
        event_id=event.id,
        defaults={"event_name": event.name, "order_id": event.payload["order_id"]},
    )
