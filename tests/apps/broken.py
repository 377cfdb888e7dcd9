"""A subscriptions module that fails to import, as a buggy one would."""

import evq


@evq.subscriber("a.b")
def fine(event: evq.Event, /) -> None: ...


raise RuntimeError("this subscriptions module is broken")
