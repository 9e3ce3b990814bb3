"""Every Prefect name the grading service writes and reads."""

from __future__ import annotations

GRADE_FLOW = "grade-solution"
GRADER_POOL = "evalq-grader"
DEPLOYMENT_NAME = "grader"
GRADER_DEPLOYMENT = f"{GRADE_FLOW}/{DEPLOYMENT_NAME}"
GRADER_TAG = "evalq-grader"
NODE_PREFIX = "node-"
ENTRYPOINT = "flows.grading.grade_solution"
"""A module path, so runners import the installed package."""


def node_name(index: int) -> str:
    """The work queue standing for local node `index`."""
    return f"{NODE_PREFIX}{index}"


def user_tag(user_slug: str) -> str:
    return f"grader-user:{user_slug}"


def node_tag(node: str) -> str:
    return f"grader-node:{node}"


def competition_tag(competition_id: str) -> str:
    return f"competition:{competition_id}"
