import evq
from ledger.models import AuditEntry


def audit(event: evq.Event, /) -> None:
    AuditEntry.objects.create(text=f"{event.name} {event.payload['order_id']}")
