"""The web dashboard: the queue's status, event log, events, dead letters and subscriptions in
a browser, safe by default.

`create_app(url)` returns a WSGI application: `evq dashboard` serves it on 127.0.0.1 with the
standard library's server, and a Django, Flask or FastAPI project can mount it under a prefix
(see docs/dashboard.md). It is built on the storage contract only, so it works on every backend,
and needs nothing beyond the standard library.
"""

from evq.dashboard.app import Dashboard, create_app

__all__ = ["Dashboard", "create_app"]
