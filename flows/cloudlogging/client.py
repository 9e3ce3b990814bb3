"""The Cloud Logging client: project and credentials the usual way, or a local endpoint for tests.

Project: `--project`, else `GOOGLE_CLOUD_PROJECT` (or `GCLOUD_PROJECT`), else the one that
comes with the credentials. Credentials: Application Default Credentials
(`GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth application-default login`, the metadata
server). `EVALQ_LOGGING_ENDPOINT` points the client at another endpoint over HTTP with anonymous
credentials: the tests' own server; users never need it.
"""

from __future__ import annotations

import contextlib
import logging
import os

from generate.errors import InputError

ENDPOINT_ENV = "EVALQ_LOGGING_ENDPOINT"
PROJECT_ENVS = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
NO_PROJECT = "no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT"
NO_CREDENTIALS = (
    "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a key file "
    "or run `gcloud auth application-default login`"
)


def project_from_env(project: str | None = None) -> str | None:
    """`project` if given, else the usual environment variables."""
    return project or next((os.environ[name] for name in PROJECT_ENVS if os.environ.get(name)), None)


@contextlib.contextmanager
def quiet_credential_search():
    """google-auth logs a WARNING for each place it looks in vain; a miss is reported by us."""
    logger = logging.getLogger("google.auth._default")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def make_client(project: str | None = None):
    """A `google.cloud.logging.Client`; `InputError` (one line) without credentials or project."""
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import logging as cloud_logging

    project = project_from_env(project)
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        if not project:
            raise InputError(None, NO_PROJECT)
        return cloud_logging.Client(
            project=project, credentials=AnonymousCredentials(), _use_grpc=False,
            client_options={"api_endpoint": endpoint},
        )
    import google.auth

    try:
        with quiet_credential_search():  # its WARNING would come before our one line
            credentials, default_project = google.auth.default(scopes=cloud_logging.Client.SCOPE)
    except DefaultCredentialsError:
        raise InputError(None, NO_CREDENTIALS) from None
    project = project or default_project
    if not project:
        raise InputError(None, NO_PROJECT)
    return cloud_logging.Client(project=project, credentials=credentials)


def global_resource(project: str):
    """The monitored resource of evalq's entries (given explicitly: detection probes the metadata server)."""
    from google.cloud.logging import Resource

    return Resource(type="global", labels={"project_id": project})
