"""``stackyard remote`` and ``stackyard webhook``: how pushes reach the platform.

``remote`` prints the URL of the stack's git remote on the platform, with a new token in
it that can push to that one stack and nothing else; ``webhook`` prints the GitHub and
GitLab webhook URLs and the secret.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, print_json
from stackyard.cli.shared import DataDir, Json, settings_for

Stack = Annotated[str, typer.Argument(help="The stack.")]


def remote_url(api_url: str, token: str, stack: str) -> str:
    """``http://stackyard:<token>@host:port/git/<stack>.git`` for an API at ``api_url``."""
    parts = urlsplit(api_url)
    netloc = f"stackyard:{quote(token, safe='')}@{parts.netloc.rpartition('@')[2]}"
    path = parts.path.rstrip("/") + f"/git/{stack}.git"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def remote(
    stack: Stack,
    expires: Annotated[
        str | None, typer.Option("--expires", help="The token's lifetime, e.g. 90d \\[never].")
    ] = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Print the URL of the stack's git remote on the platform; a push to it starts a run.

    Use it as: git remote add stackyard "$(stackyard remote STACK)", then
    git push stackyard main.

    Each call makes a new token that can push to this stack and nothing else (see
    `stackyard tokens`), and puts it in the URL as its password: git saves it in
    .git/config. It is the only URL Stackyard prints with a token in it.
    """
    client = ApiClient.discover(settings_for(data_dir))
    found = client.get(f"/api/v1/stacks/{stack}")
    issued = client.request(
        "POST",
        "/api/v1/tokens",
        json={"scope": "push", "stack": stack, "expires": expires, "label": "git remote"},
    )
    # On the published URL (`up --public-api`, `--public-url`) when there is one: the
    # remote is for machines other than this one.
    base = client.get("/api/v1/status").get("public_url") or client.base_url
    url = remote_url(base, issued["token"], stack)
    token_id = issued["info"]["id"]
    if json_output:
        print_json({"stack": stack, "branch": found["branch"], "url": url, "token_id": token_id})
        return
    # Only the URL goes to stdout, so "$(stackyard remote STACK)" is just the URL.
    print(url)
    err_console.print(
        f"[yellow]note:[/] this URL holds token {token_id}, which can push to {stack} and "
        f"nothing else; pushes to {found['branch']} start a pipeline run. Revoke it with "
        f"`stackyard tokens revoke {token_id}`.",
        highlight=False,
        soft_wrap=True,
    )


def webhook(
    stack: Stack,
    rotate: Annotated[
        bool,
        typer.Option("--rotate", help="Make a new secret; the old one stops working at once."),
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Print the GitHub and GitLab webhook URLs of a stack and its secret."""
    client = ApiClient.discover(settings_for(data_dir))
    path = f"/api/v1/stacks/{stack}/webhook"
    info = client.request("POST", f"{path}/rotate") if rotate else client.get(path)
    if json_output:
        print_json(info)
        return
    console.print(f"[bold]{stack}[/] webhooks (push events, content type application/json)")
    console.print(f"  github  {info['github_url']}", highlight=False, soft_wrap=True)
    console.print(f"  gitlab  {info['gitlab_url']}", highlight=False, soft_wrap=True)
    console.print(f"  secret  {info['secret']}", highlight=False, soft_wrap=True)
    if rotate:
        console.print("[yellow]New secret:[/] update it in every webhook that posts here.")
    console.print(
        "GitHub: Settings > Webhooks, secret above. GitLab: Settings > Webhooks, secret "
        "token above. The URL must be reachable from the git host: publish the API with "
        "`stackyard up --public-api` (or behind a reverse proxy, with --public-url).",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command()(remote)
    app.command()(webhook)
