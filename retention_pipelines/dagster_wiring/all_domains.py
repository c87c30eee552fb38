"""Every domain at once (the seed's enforce_retention_policies): a request per domain's job."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, domain_partitions, job_name
from retention_pipelines.policies import DomainPolicy


def build_all_domains_sensor(policies: list[DomainPolicy], jobs: list) -> dg.SensorDefinition:
    """Requests each domain's job for its latest partition, once per partition (the run key), so
    that a domain whose own schedule was stopped or missed catches up. Runs of different domains
    go side by side; dagster.yaml allows one run per domain at a time (tag retention/domain) and
    each run holds its domain's lock. Stopped by default: the domains' own schedules keep time."""

    @dg.sensor(name="retention_all_domains_sensor", jobs=jobs, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def retention_all_domains_sensor(context: dg.SensorEvaluationContext):
        for policy in policies:
            partition = domain_partitions(policy).get_last_partition_key()
            yield dg.RunRequest(job_name=job_name(policy.name), partition_key=partition,
                                run_key=f"{policy.name}:{partition}", tags={DOMAIN_TAG: policy.name})

    return retention_all_domains_sensor
