"""Phase: monitoring. The alarms watch what the other phases made, so they follow them; the topic,
its key and the budget need nothing else and start at once:

    sns key ─> topic ─┬──────────────────────────────> budget
                      │
    services, ALB, DB ─> what the alarms watch ─┬─> alarms (per service, the ALB, the DB)
                                                └─> dashboard
    services' log groups ─> metric filters
    alarms, filters ─> remove those the stack no longer names
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from spec import Stack
from tasks import console, kms, monitoring
from tasks.aws import AwsContext
from tasks.contract import Observed


@dataclass
class MonitoringFutures:
    key: PrefectFuture[Any] | None = None
    topic: PrefectFuture[Any] | None = None
    targets: PrefectFuture[Any] | None = None
    alarms: dict[str, PrefectFuture[Any]] = field(default_factory=dict)
    filters: dict[str, PrefectFuture[Any]] = field(default_factory=dict)
    dashboard: PrefectFuture[Any] | None = None
    budget: PrefectFuture[Any] | None = None
    prune: PrefectFuture[Any] | None = None

    def all(self) -> list[PrefectFuture[Any]]:
        singles = [self.key, self.topic, self.targets, self.dashboard, self.budget, self.prune]
        return [f for f in singles if f is not None] + [*self.alarms.values(), *self.filters.values()]


def submit_monitoring(spec: Stack, ctx: AwsContext, *, after: list[PrefectFuture[Any]]) -> MonitoringFutures:
    """`after`: what makes the watched resources (services, load balancer, database, log groups)."""
    if not spec.monitoring.enabled:
        # Off: only remove what an earlier run made.
        return MonitoringFutures(prune=monitoring.prune_monitoring.submit(spec, ctx, wait_for=after))
    key = kms.ensure_key.submit(ctx, monitoring.KEY_PURPOSE)
    topic = monitoring.ensure_topic.submit(spec, ctx, key)
    targets = monitoring.discover_targets.submit(spec, ctx, wait_for=after)
    # One task per subject (a service, the ALB, the DB), each ensuring its few alarms.
    alarms = {subject: monitoring.ensure_alarms.submit(spec, ctx, subject, targets, topic)
              for subject in monitoring.alarm_subjects(spec)}
    filters = {service: monitoring.ensure_metric_filters.submit(spec, ctx, service, wait_for=after)
               for service in dict.fromkeys(ref.service for ref in monitoring.planned_filters(spec))}
    dashboard = monitoring.ensure_dashboard.submit(spec, ctx, targets)
    budget = monitoring.ensure_budget.submit(spec, ctx, topic)
    prune = monitoring.prune_monitoring.submit(spec, ctx, wait_for=[*alarms.values(), *filters.values()])
    return MonitoringFutures(key=key, topic=topic, targets=targets, alarms=alarms, filters=filters,
                             dashboard=dashboard, budget=budget, prune=prune)


def monitoring_outputs(futures: MonitoringFutures, ctx: AwsContext) -> dict[str, Any]:
    if futures.topic is None:
        return {"monitoring": "off"}
    outputs: dict[str, Any] = {"alarm_topic": futures.topic.result().id,
                               "alarms": sum(len(f.result()) for f in futures.alarms.values())}
    dashboard = futures.dashboard.result() if futures.dashboard else None
    if dashboard is not None:
        outputs["dashboard"] = console.console_url(dashboard.name, ctx.region, "dashboard")
    budget = futures.budget.result() if futures.budget else None
    if budget is not None:
        outputs["monthly_budget_usd"] = budget.attrs["limit_usd"]
    return outputs


def submit_monitoring_teardown(found: dict[tuple[str, str], list[Observed]],
                               ctx: AwsContext) -> list[PrefectFuture[Any]]:
    """Alarms, filters, the dashboard and the budget side by side, then the topic they publish to."""
    family = "monitoring"
    owned = found.get((family, "alarm"), [])
    alarms = [monitoring.delete_alarms.submit(owned, ctx)] if owned else []
    filters = [monitoring.delete_metric_filter.submit(o, ctx) for o in found.get((family, "metric filter"), [])]
    dashboards = [monitoring.delete_dashboard.submit(o, ctx) for o in found.get((family, "dashboard"), [])]
    budgets = [monitoring.delete_budget.submit(o, ctx) for o in found.get((family, "budget"), [])]
    topics = [monitoring.delete_topic.submit(o, ctx, wait_for=alarms + budgets)
              for o in found.get((family, "sns topic"), [])]
    return [*alarms, *filters, *dashboards, *budgets, *topics]


@flow(name="monitoring", description="Alarms on the services, load balancer and database to an encrypted SNS "
      "topic, metric filters on the services' logs, a dashboard and a monthly cost budget.")
def monitoring_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    # What the alarms watch is found by its tags; a missing piece fails its alarm with what to run first.
    futures = submit_monitoring(spec, ctx, after=[])
    settle(futures.all())
    return monitoring_outputs(futures, ctx)
