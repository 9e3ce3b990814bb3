"""Pure: a grading node's stable integer id, as the API's clients know it (`"node_id": 0`).

A node is a work queue; its description holds its id and address as JSON (`NodeDescription`,
written by `nodes.register_node` only). An id is handed out once, when the node first
registers, and kept for the node's life: a local node `node-<i>` takes `i` when free, any other
the next id past the highest ever seen, so a later node never takes the id of an earlier
one's past jobs. Queues made by an older evalq (the description a bare IP address) get theirs
the first time they are read.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field, ValidationError

from flows.naming import NODE_PREFIX


class NodeDescription(BaseModel):
    """A node's work-queue description."""

    node_id: int = Field(ge=0)
    ip: str | None = None

    def text(self) -> str:
        return self.model_dump_json()


@dataclass(frozen=True)
class Claim:
    """A node's id as one read of the queues shows it (for telling who keeps a contested id)."""

    name: str
    node_id: int | None
    created: datetime | None


def parse_description(text: str | None) -> tuple[int | None, str | None]:
    """(node id, IP address) from a queue's description; an older bare address has no id."""
    text = (text or "").strip()
    try:
        described = NodeDescription.model_validate(json.loads(text))
        return described.node_id, valid_ip(described.ip)
    except (ValueError, ValidationError):
        return None, valid_ip(text)


def valid_ip(text: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((text or "").strip()))
    except ValueError:
        return None


def next_id(name: str, taken: set[int], highest_seen: int = -1) -> int:
    """The id a newly registered node gets: `i` for `node-<i>` when free, else one past every id seen."""
    suffix = name.removeprefix(NODE_PREFIX)
    if name.startswith(NODE_PREFIX) and suffix.isdigit() and int(suffix) not in taken:
        return int(suffix)
    return max([*taken, highest_seen]) + 1


def keeps_id(me: Claim, others: list[Claim]) -> bool:
    """Whether `me` keeps its id: no node that registered earlier (then: whose name sorts first) claims it."""
    rank = (me.created is None, me.created or datetime.min, me.name)
    return not any(
        other.node_id == me.node_id and (other.created is None, other.created or datetime.min, other.name) < rank
        for other in others if other.name != me.name
    )
