"""Alerting: rules over the health snapshot, the monitor that evaluates them, the sinks that notify.

    rules      pure: which conditions hold now (`evaluate`), fire-once/resolve-once (`AlertTracker`)
    budget     pure: the `budget` rule over the usage ledger's spend (`budget_alerts`)
    sinks      where events go: log, webhook, file, command (`build_sinks`, `Notifier`)
    monitor    the loop inside the gateway (`Monitor`, GET /alerts) and the outside check of a gateway
               (`check_gateway`, `watch_gateway`)

It reads `BackendHealth` (aifabric.core) and never probes: health checking is `aifabric.health`.
"""
