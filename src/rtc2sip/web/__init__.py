"""What operators and users see over HTTP: on the gateway's own WebSocket port (issue 5), and on the
admin listener (issue 13 item 5).

- ``http``: routing of the GET requests that are not WebSocket upgrades; the bearer-token gate of the
  admin routes; the static files (``static/``: the web phone, the live view, ``openapi.json``).
- ``admin``: the admin listener (``[admin]``, aiohttp): the admin API with POST and DELETE actions on
  calls (recording, forwarding), and the live view whose buttons use them.
- ``api``: the JSON views of registrations and calls (``/api/...``, described by ``static/openapi.json``).
- ``metrics``: the Prometheus text exposition (format 0.0.4) at ``/metrics``.
- ``monitor``: what the live tables do not keep: ended calls (a bounded history), totals by end
  cause, media counters of ended sessions, media failures, event-loop lag.

The web phone's JavaScript is built from ``webphone/`` (JsSIP bundled by esbuild) into ``static/phone.js``,
committed so that an installed package serves it with no network.
"""

from .http import HttpResponse, WebRouter
from .monitor import Monitor

__all__ = ["HttpResponse", "Monitor", "WebRouter"]
