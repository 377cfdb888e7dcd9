from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"

    def ready(self) -> None:
        # As in the seed: a subscription made when Django is ready.
        import evq
        from ledger.receivers import audit

        evq.subscribe("order.*", receiver=audit)
