"""Imported when Django is ready, as admin.py is."""

import evq
from ledger.models import Order, Receipt


@evq.subscriber("order.paid")
def write_receipt(event: evq.Event, /) -> None:
    order = Order.objects.get(pk=event.payload["order_id"])
    Receipt.objects.get_or_create(order=order, defaults={"event_id": event.id})
