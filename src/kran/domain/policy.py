"""Roles as one policy: who may act for whom, who may give an app a user, whose jobs may
run as a privileged user. Each answer is None (allowed) or the reason it is not."""

from __future__ import annotations

from kran.domain.auth import Principal, Role

FIRST_REGULAR_UID = 1000  # below: root and system accounts


def act_for_refusal(actor: Principal, target: str, target_role: Role) -> str | None:
    """A service acts only for users of role `user`; an admin for anyone; a user for nobody."""
    if target == actor.user or actor.role == Role.ADMIN:
        return None
    if actor.role != Role.SERVICE:
        return "only services submit on behalf of other users"
    if target_role != Role.USER:
        return f"a service acts only for users of role user, not for {target_role.value} {target!r}"
    return None


def app_user_refusal(actor: Principal) -> str | None:
    """Only an admin gives an app a user: a uid is someone's files on the host (or another
    kran user's jobs), not a user's to pick."""
    return None if actor.is_admin else "only an admin may give an app a user (--user)"


def is_privileged(run_as: tuple[int, int] | None) -> bool:
    return run_as is not None and min(run_as) < FIRST_REGULAR_UID


def app_use_refusal(app: str, run_as: tuple[int, int] | None, submitter: Principal) -> str | None:
    """A job runs as a privileged user (root, a system account) only if an admin submits it."""
    if is_privileged(run_as) and not submitter.is_admin:
        assert run_as is not None
        return f"app {app!r} runs as uid {run_as[0]}:{run_as[1]} (a system account): only an admin's jobs may use it"
    return None
