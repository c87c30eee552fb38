"""Every domain at once (the seed's enforce_retention_policies): a request per domain's job."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, job_name
from retention_pipelines.dagster_wiring.windows import run_request, windows_to_cover
from retention_pipelines.policies import DomainPolicy


def build_all_domains_sensor(policies: list[DomainPolicy], jobs: list) -> dg.SensorDefinition:
    """Requests each domain's job for the windows since its last recorded one, once per latest
    window (the run key), so that a domain whose own schedule was stopped or missed catches up.
    Runs of different domains go side by side; each domain's runs queue one at a time (tag
    retention/domain, its pool) and each holds the domain's lock. Stopped by default: the
    domains' own schedules keep time."""

    @dg.sensor(name="retention_all_domains_sensor", jobs=jobs, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def retention_all_domains_sensor(context: dg.SensorEvaluationContext):
        for policy in policies:
            windows = windows_to_cover(context.instance, policy)
            yield run_request(windows, job_name=job_name(policy.name), run_key=f"{policy.name}:{windows.end}",
                              tags={DOMAIN_TAG: policy.name})

    return retention_all_domains_sensor
