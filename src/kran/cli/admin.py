"""`kran admin ...`: users and API keys (admin only)."""

from __future__ import annotations

import click

from kran.cli.client import Client
from kran.cli.render import kv_table, print_json


@click.group("admin")
def admin() -> None:
    """Users and API keys (admin only)."""


@admin.group("user")
def user() -> None:
    """Users: add, list, disable, enable."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "service", "admin"]), default="user", show_default=True)
def user_add(name: str, role: str) -> None:
    """Add a user (then give them a key: kran admin key create NAME)."""
    Client().post("/api/v1/admin/users", json={"name": name, "role": role})
    click.echo(f"user {name} added ({role})")


@user.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def user_list(output: str) -> None:
    """List users."""
    rows = Client().get("/api/v1/admin/users")["users"]
    print_json(rows) if output == "json" else kv_table(rows, ["name", "role", "disabled", "created_at"])


@user.command("disable")
@click.argument("name")
def user_disable(name: str) -> None:
    """Disable a user: their keys stop working at once."""
    Client().post(f"/api/v1/admin/users/{name}/disable")
    click.echo(f"user {name} disabled")


@user.command("enable")
@click.argument("name")
def user_enable(name: str) -> None:
    """Enable a user again."""
    Client().post(f"/api/v1/admin/users/{name}/enable")
    click.echo(f"user {name} enabled")


@admin.group("key")
def key() -> None:
    """API keys: create, list, revoke."""


@key.command("create")
@click.argument("user_name", metavar="USER")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def key_create(user_name: str, output: str) -> None:
    """Create a key for USER; its secret is shown this once."""
    r = Client().post("/api/v1/admin/keys", json={"user": user_name})
    if output == "json":
        print_json({"key_id": r["key_id"], "secret": r["secret"]})
    else:
        click.echo(f"key_id = {r['key_id']}\nsecret = {r['secret']}\n(the secret is not shown again)")


@key.command("list")
@click.argument("user_name", metavar="[USER]", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def key_list(user_name: str | None, output: str) -> None:
    """List keys (never their secrets)."""
    params = {"user": user_name} if user_name else {}
    rows = Client().get("/api/v1/admin/keys", params=params)["keys"]
    print_json(rows) if output == "json" else kv_table(rows, ["key_id", "user", "revoked", "created_at"])


@key.command("revoke")
@click.argument("key_id")
def key_revoke(key_id: str) -> None:
    """Revoke a key: requests signed with it are refused at once."""
    Client().post(f"/api/v1/admin/keys/{key_id}/revoke")
    click.echo(f"key {key_id} revoked")


@admin.group("webhook")
def webhook() -> None:
    """Server-wide webhooks: every job's events, signed (see kran admin notify)."""


@webhook.command("add")
@click.argument("url")
@click.option(
    "--event", "events", multiple=True, help="job.started, job.succeeded, job.failed, array.ended (default all)"
)
def webhook_add(url: str, events: tuple[str, ...]) -> None:
    """Add a webhook; URL must fall under notify.allowed_prefixes."""
    r = Client().post("/api/v1/admin/webhooks", json={"url": url, "events": list(events)})
    click.echo(f"webhook {r['id']}: {r['url']} ({', '.join(r['events'])})")


@webhook.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def webhook_list(output: str) -> None:
    rows = Client().get("/api/v1/admin/webhooks")["webhooks"]
    if output == "json":
        print_json(rows)
    else:
        kv_table([{**r, "events": ",".join(r["events"])} for r in rows], ["id", "url", "events", "created_at"])


@webhook.command("remove")
@click.argument("hook_id", type=int)
def webhook_remove(hook_id: int) -> None:
    Client().delete(f"/api/v1/admin/webhooks/{hook_id}")
    click.echo(f"webhook {hook_id} removed")


@admin.command("notify")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def notify_state(output: str) -> None:
    """The key receivers verify X-Kran-Signature with, the allowed prefixes, the outbox."""
    r = Client().get("/api/v1/admin/notify")
    if output == "json":
        print_json(r)
    else:
        click.echo(f"secret = {r['secret']}\nallowed prefixes = {', '.join(r['allowed_prefixes']) or '(none)'}")
        click.echo(f"pending = {r['pending']}\ngave up = {r['gave_up']}")
