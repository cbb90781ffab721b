"""Which policy (``Settings.archive_policies``) selects an item, and whether it is old enough."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from abathur.config import ArchivePolicy

DAY = 86400.0


def _in_scope(namespace: str, scope: str | None) -> bool:
    return scope is None or namespace == scope or namespace.startswith(scope + ":")


def best_policy(
    policies: Sequence[ArchivePolicy],
    kind: str,
    *,
    namespace: str | None = None,
    app: str | None = None,
    type_: str | None = None,
) -> ArchivePolicy | None:
    """The most specific policy of ``kind`` for an item: longest scope, then a typed one."""
    best: ArchivePolicy | None = None
    best_rank = (-1, False)
    for p in policies:
        if p.kind != kind or (p.type is not None and p.type != type_):
            continue
        if kind == "sessions":
            if p.scope is not None and p.scope != app:
                continue
            rank = (0 if p.scope is None else 1, False)
        else:
            if namespace is None or not _in_scope(namespace, p.scope):
                continue
            depth = 0 if p.scope is None else p.scope.count(":") + 1
            rank = (depth, p.type is not None)
        if rank > best_rank:
            best, best_rank = p, rank
    return best


def is_older(at: float | None, policy: ArchivePolicy | None, now: float) -> bool:
    return (
        at is not None
        and policy is not None
        and policy.after_days is not None
        and at <= now - policy.after_days * DAY
    )


def whole_memory_policy(
    policies: Sequence[ArchivePolicy],
    namespace: str,
    type_: str,
    status: str,
    created_at: float,
    expires_at: float | None,
    now: float,
) -> Literal["memories", "tombstones"] | None:
    """Which policy (if any) moves this memory whole, from its current version."""
    if status == "deleted" and is_older(
        created_at, best_policy(policies, "tombstones", namespace=namespace, type_=type_), now
    ):
        return "tombstones"
    policy = best_policy(policies, "memories", namespace=namespace, type_=type_)
    if policy is None or policy.after_days is None:
        return None
    if expires_at is not None and expires_at <= now:
        return "memories" if is_older(expires_at, policy, now) else None
    if (
        status == "live"
        and policy.idle_days is not None
        and created_at <= now - policy.idle_days * DAY
    ):
        return "memories"
    return None
