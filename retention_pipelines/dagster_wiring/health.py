"""The health check (check_cleanup_health) as an asset with one check per dependency."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import RUN_TAGS
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine.retention.health import Probe, check_health
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores.breaker import Breakers

HEALTH_KEY = dg.AssetKey(["retention", "health"])


def check_name(probe_name: str) -> str:
    return probe_name.replace(":", "_")


def probe_names(policies: list[DomainPolicy]) -> list[str]:
    names = ["database", "migrations", *(f"policy:{p.name}" for p in policies), "lock_service", "archive_store"]
    return names + (["blob_store"] if any(p.blob_key_column for p in policies) else [])


def run_health(stores: RetentionStores, policies: list[DomainPolicy]) -> list[Probe]:
    """Every probe, the ones that do not apply (no Redis: a local lock) reported as such; each
    dependency through its probe's circuit breaker (RETENTION_BREAKER_*)."""
    settings = stores.settings()
    probes = check_health(stores.database, policies, stores.archive_store,
                          stores.blob_store if any(p.blob_key_column for p in policies) else None, settings.redis_url,
                          Breakers.from_settings(settings))
    if not settings.redis_url:
        probes.append(Probe("lock_service", True, "no Redis configured: a local file lock (embedded default)"))
    return probes


def build_health_defs(policies: list[DomainPolicy]) -> dg.Definitions:
    names = probe_names(policies)

    @dg.asset(key=HEALTH_KEY, group_name="health", check_specs=[
        dg.AssetCheckSpec(check_name(name), asset=HEALTH_KEY, description=f"{name} is there and works",
                          metadata=runbook(f"health.md#{name.split(':')[0]}"))
        for name in names], description=(
        "Is everything a retention run needs there? The database and its clock, the migrations, each "
        "policy's table, columns and clock index, the lock service (no lock without TTL), and a put/get/"
        "delete probe of the archive and blob stores. A failure names the dependency and what to do."))
    def health(context: dg.AssetExecutionContext, retention_stores: RetentionStores):
        probes = {probe.name: probe for probe in run_health(retention_stores, policies)}
        for name in names:
            probe = probes.get(name, Probe(name, False, "not probed: the database is unreachable"))
            if not probe.ok:
                context.log.error(f"health: {name}: {probe.message}")
            yield dg.AssetCheckResult(check_name=check_name(name), passed=probe.ok,
                                      metadata={"message": probe.message})
        yield dg.MaterializeResult(metadata={"failing": sum(not p.ok for p in probes.values()),
                                             "probes": len(names)})

    job = dg.define_asset_job("retention_health_job", selection=dg.AssetSelection.assets(HEALTH_KEY),
                              tags=RUN_TAGS, description="Probe every dependency of the retention runs.")
    schedule = dg.ScheduleDefinition(name="retention_health_schedule", job=job, cron_schedule="*/15 * * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING)
    return dg.Definitions(assets=[health], jobs=[job], schedules=[schedule])
