"""The engine's HTTP layer: an ASGI app (FastAPI, pydantic models) served by uvicorn.

    app.py      the app: routes, dashboard, live updates, limits, JSON refusals, OpenAPI
    routes.py   /rollouts (reads, manual commands), /metrics, /healthz, /readyz
    models.py   the JSON shapes (the OpenAPI document is generated from them)
    auth.py     the bearer token (constant-time comparison)
    sse.py      /events: live updates (server-sent events)
    ui.py       the dashboard's files at / and /ui/
    limits.py   per-request deadline, body limit, request log line (no query strings)
    context.py  what the app serves from; database calls on a bounded thread pool
    links.py    links out (Grafana, Kiali...) per rollout from URL templates
    errors.py   the refusal shape and the store errors' statuses
    server.py   uvicorn in a thread: connection limit, request-head timeout (slowloris)
"""

from analyzer.daemon.api.app import create_app
from analyzer.daemon.api.auth import check_token
from analyzer.daemon.api.context import ApiContext, Limits
from analyzer.daemon.api.links import LinkError, LinkTemplate
from analyzer.daemon.api.server import ApiServer

__all__ = ["ApiContext", "ApiServer", "Limits", "LinkError", "LinkTemplate", "check_token",
           "create_app"]
