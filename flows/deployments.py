"""Old path of the deployments' pull step: deployments made by `prefect deploy` before the move
to `flows/runtime/` store `flows.deployments.use_installed_package`; they keep working."""

from flows.runtime.deployments import use_installed_package  # noqa: F401
