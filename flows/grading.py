"""Old entrypoint of the grading flow: grader deployments made before the move to
`flows/grader/flow.py` store `flows.grading.grade_solution`; they keep working."""

from flows.grader.flow import grade_solution  # noqa: F401
