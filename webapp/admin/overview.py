"""The Overview (the dashboard's index page): the service's live figures and two charts of
the last 15 minutes, updated over socket.io without a reload (webapp/static/admin/overview.js).
The page arrives with the samples already taken (webapp/admin/live.py), so its charts are
drawn at once."""

from __future__ import annotations

from flask_admin import expose

from webapp.admin.base import OperatorIndexView
from webapp.admin.live import HISTORY_MINUTES, recent_samples
from webapp.extensions import services


class OverviewView(OperatorIndexView):
    @expose("/")
    def index(self) -> str:
        samples = recent_samples(services().redis, services().settings)
        return self.render("operator/overview.html", samples=samples,
                           latest=samples[-1] if samples else {},
                           minutes=HISTORY_MINUTES,
                           interval=services().settings.DASHBOARD_SAMPLE_INTERVAL)
