"""What GCP can run, with no call to Google: Cloud Scheduler's schedule dialect,
and the Secret Manager references secrets= takes.

The Cloud Functions runtimes are in source.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployer.errors import ConfigError
from deployer.triggers import (
    Every,
    Schedule,
    every_cron_fields,
    every_error,
    parse_cron,
    require_schedule,
    require_steady_clock,
    unix_fields,
)

SCHEDULER = "GCP Cloud Scheduler"


@dataclass(frozen=True)
class GcpOptions:
    """``provider_options`` of provider "gcp" (a dict with these keys works too).

    >>> deployer.deploy(predict, name="scores", provider="gcp", output="gs://acme/runs",
    ...                 provider_options=GcpOptions(project="acme-ml", region="europe-west1"))
    """

    project: str | None = None
    """The project (default: GOOGLE_CLOUD_PROJECT, gcloud's, or the credentials')."""
    region: str | None = None
    """The region (default: GOOGLE_CLOUD_REGION or gcloud's functions/region)."""
    service_account: str | None = None
    """An existing account the function runs as, instead of the one deployer makes
    (deployer grants it nothing: it must read the inputs, write the output and
    access the secrets= of the function)."""


def to_cloud_scheduler(schedule: Schedule) -> tuple[str, str]:
    """GCP Cloud Scheduler (schedule, time_zone): unix cron, written in its plainest form.

    >>> to_cloud_scheduler(Every(minutes=15))
    ('*/15 * * * *', 'UTC')
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        fields = every_cron_fields(schedule)
        if fields is None:
            raise every_error(SCHEDULER, schedule)
        return " ".join(fields), "UTC"
    require_steady_clock(
        SCHEDULER, schedule, "does not document what it does there (its docs recommend UTC)"
    )
    # Cloud Scheduler ORs the day fields when neither is '*', as unix cron does (its docs)
    return " ".join(unix_fields(parse_cron(schedule.expr))), schedule.tz


# Secret Manager's names: a secret id is 1-255 letters, digits, "-" and "_"; a
# version is a number or "latest" (what Cloud Functions' SecretEnvVar takes); a
# project is its id (a domain-scoped one has "example.com:" in front) or number.
SECRET_ID = r"[A-Za-z0-9_-]{1,255}"
SECRET_VERSION = r"latest|[1-9][0-9]*"
PROJECT_ID = r"[a-z0-9][-a-z0-9.:]{0,90}[a-z0-9]"
FULL_REFERENCE = re.compile(
    rf"^projects/(?P<project>{PROJECT_ID})/secrets/(?P<secret>{SECRET_ID})"
    rf"(?:/versions/(?P<version>{SECRET_VERSION}))?$"
)
SHORT_REFERENCE = re.compile(rf"^(?P<secret>{SECRET_ID})(?:@(?P<version>{SECRET_VERSION}))?$")
# Variables Cloud Run and the Python runtime set themselves: a function cannot have them.
RESERVED_VARIABLES = frozenset(
    {
        "PORT",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
        "FUNCTION_TARGET",
        "FUNCTION_SIGNATURE_TYPE",
    }
)
RESERVED_PREFIX = "X_GOOGLE_"


@dataclass(frozen=True)
class SecretReference:
    """The Secret Manager secret version a secrets= reference names.

    >>> parse_secret_reference("DB_URL", "db-url@3")
    SecretReference(secret='db-url', version='3', project=None)
    """

    secret: str
    version: str = "latest"
    project: str | None = None  # None: the function's own project

    def resource(self, project: str) -> str:
        """The secret's resource name (its IAM policy is on it), in ``project`` unless
        the reference names one."""
        return f"projects/{self.project or project}/secrets/{self.secret}"

    def render(self, project: str) -> str:
        return f"{self.resource(project)}/versions/{self.version}"


def parse_secret_reference(name: str, reference: str) -> SecretReference:
    """A secrets= reference: ``projects/P/secrets/S/versions/V``, ``projects/P/secrets/S``
    (version latest), or ``S`` / ``S@V`` for a secret of the function's own project.

    The reference is not quoted in the error: a malformed one may be the
    secret's value, passed by mistake."""
    match = FULL_REFERENCE.match(reference) or SHORT_REFERENCE.match(reference)
    if match is None:
        raise ConfigError(
            f"secrets=: the reference of {name} is not a Secret Manager secret (not shown: it "
            "may be the value itself): write projects/PROJECT/secrets/SECRET/versions/VERSION, "
            "projects/PROJECT/secrets/SECRET (the latest version), or SECRET or SECRET@VERSION "
            "for a secret of the function's project; VERSION is a number or latest. Put the "
            "value itself in Secret Manager: `gcloud secrets create SECRET --data-file=-`"
        )
    groups = match.groupdict()
    return SecretReference(
        secret=groups["secret"],
        version=groups["version"] or "latest",
        project=groups.get("project"),
    )


def check_variable_names(names: list[str], what: str) -> None:
    """Refuse a variable Cloud Run or the runtime sets itself."""
    for name in names:
        if name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIX):
            raise ConfigError(
                f"{what}=: {name} is set by Cloud Functions itself on GCP: choose another name"
            )
