"""The permission table: what every route of the API and the console needs, in one place.

Keyed by the route's endpoint function. ``create_app`` puts ``NEEDS`` on the app, and
``api/auth.py`` ``check`` looks each request's endpoint up in it: a route that is not
here is refused (403), and ``tests/unit/test_access_matrix.py`` fails for it, so a new
route cannot ship without a permission. ``PUBLIC`` lists the routes that check their
callers themselves (or need nobody): the login form, the webhooks (signatures), the git
remote (``routes/git.py`` ``GIT_FETCH``/``GIT_PUSH``, through the same ``decide``) and
``/healthz``.
docs/people.md shows this table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stackyard.access.rules import Action, Need, StageFrom
from stackyard.api.routes import (
    audit,
    builds,
    deployments,
    domains,
    git,
    hooks,
    logs,
    nodes,
    notify,
    people,
    platform,
    protection,
    registries,
    releases,
    retention,
    runs,
    stacks,
    targets,
    traffic,
    variables,
)
from stackyard.api.web import actions, pages

READ, PUSH, DEPLOY, ADMIN = Action.READ, Action.PUSH, Action.DEPLOY, Action.ADMIN
GIT_FETCH, GIT_PUSH = git.GIT_FETCH, git.GIT_PUSH

ON_STAGE = StageFrom.PATH
GATE = Need(DEPLOY, stage=StageFrom.PATH, gate=True)

NEEDS: dict[Callable[..., Any], Need] = {
    # the platform
    platform.platform_status: Need(READ, stack=None),
    platform.openapi: Need(READ, stack=None),
    retention.disk_use: Need(READ, stack=None),
    retention.run_retention: Need(ADMIN, stack=None),  # removes images and logs
    audit.audit: Need(READ, stack=None),
    # people and tokens (a person's own: lists and revocations of others' take admin)
    people.whoami: Need(None, stack=None),
    people.list_people: Need(READ, stack=None),
    people.get_person: Need(READ, stack=None),
    people.add_person: Need(ADMIN, stack=None),
    people.change_role: Need(ADMIN, stack=None),
    people.remove_person: Need(ADMIN, stack=None),
    people.list_tokens: Need(None, stack=None, people_only=True),
    people.create_token: Need(None, stack=None, people_only=True),
    people.revoke_token: Need(None, stack=None, people_only=True),
    # the nodes of a cluster (the platform's machines: reading is for every reader)
    nodes.list_nodes: Need(READ, stack=None),
    nodes.get_node: Need(READ, stack=None),
    nodes.drain: Need(ADMIN, stack=None),
    nodes.activate: Need(ADMIN, stack=None),
    nodes.set_address: Need(ADMIN, stack=None),
    # outside registries (their credentials are the platform's: admin only)
    registries.add_registry: Need(ADMIN, stack=None, redact=("password",)),
    registries.list_registries: Need(ADMIN, stack=None),
    registries.get_registry: Need(ADMIN, stack=None),
    registries.check_registry: Need(ADMIN, stack=None),
    registries.update_registry: Need(ADMIN, stack=None, redact=("password",)),
    registries.remove_registry: Need(ADMIN, stack=None),
    # targets (where stages run: admin only)
    targets.add_target: Need(ADMIN, stack=None),
    targets.list_targets: Need(ADMIN, stack=None),
    targets.get_target: Need(ADMIN, stack=None),
    targets.check_target: Need(ADMIN, stack=None),
    targets.remove_target: Need(ADMIN, stack=None),
    # stacks
    stacks.create_stack: Need(ADMIN, stack=None),
    stacks.list_stacks: Need(READ, stack=None),
    stacks.get_stack: Need(READ),
    stacks.list_stages: Need(READ),
    stacks.update_stack: Need(ADMIN),
    stacks.delete_stack: Need(ADMIN),
    protection.list_protection: Need(READ),
    protection.protect: Need(ADMIN),
    protection.unprotect: Need(ADMIN),
    hooks.webhook: Need(ADMIN),  # shows the webhook secret
    hooks.rotate_webhook: Need(ADMIN),
    git.record_push: Need(PUSH),  # the post-receive hook, with the pusher's token
    # builds, releases, deployments, runs
    builds.start_build: Need(DEPLOY),
    builds.list_builds: Need(READ),
    builds.get_build: Need(READ),
    builds.build_log: Need(READ),
    builds.list_images: Need(READ),
    releases.create_release: Need(DEPLOY, stage=ON_STAGE),
    releases.list_releases: Need(READ),
    releases.list_all_releases: Need(READ),
    releases.get_release: Need(READ),
    releases.release_log: Need(READ),
    deployments.deploy: Need(DEPLOY, stage=ON_STAGE),
    deployments.list_deployments: Need(READ),
    deployments.get_deployment: Need(READ),
    deployments.deployment_log: Need(READ),
    deployments.rollback: Need(DEPLOY, stage=ON_STAGE),
    deployments.tasks: Need(READ),
    deployments.check: Need(READ),
    deployments.url: Need(READ),
    deployments.retire_stage: Need(ADMIN),  # stops what a stage serves, for good
    # a stage's host names: reading is for readers; a name changes what the stage serves
    # and asks a CA for a certificate, so it takes deploy on that stage (as a push of a
    # stackyard.yml with `domains:` would); a protected stage's deployers only
    domains.domains: Need(READ),
    domains.add: Need(DEPLOY, stage=ON_STAGE),
    domains.remove: Need(DEPLOY, stage=ON_STAGE),
    traffic.traffic: Need(READ),  # counts and latencies from the access logs, no paths
    runs.start_run: Need(DEPLOY),
    runs.list_runs: Need(READ),
    runs.get_run: Need(READ),
    runs.run_log: Need(READ),
    runs.cancel_run: Need(DEPLOY),
    runs.approve: GATE,
    runs.promote: Need(DEPLOY, stage=ON_STAGE),
    logs.logs: Need(READ),
    logs.task_logs: Need(READ),
    logs.access_logs: Need(READ),  # masked like every other log
    # variables and secrets (a runtime change reaches every stage unless it names one)
    variables.list_variables: Need(READ),
    variables.change_variables: Need(DEPLOY, stage=StageFrom.QUERY_OR_BUILD),
    variables.set_variable: Need(DEPLOY, stage=StageFrom.QUERY_OR_BUILD),
    variables.unset_variable: Need(DEPLOY, stage=StageFrom.QUERY_OR_BUILD),
    variables.list_secrets: Need(READ),
    variables.set_secret: Need(DEPLOY, stage=StageFrom.QUERY, redact=("value",)),
    variables.unset_secret: Need(DEPLOY, stage=StageFrom.QUERY),
    # notifications: anyone who reads the stack sees its channels, masked (nobody reads a
    # URL or password back); a deployer changes them with their own token, not a stack
    # token (a CI token must not silence the team's alerts); the audit log never holds them
    notify.list_channels: Need(READ),
    notify.add_channel: Need(DEPLOY, people_only=True, redact=("target", "smtp")),
    notify.remove_channel: Need(DEPLOY, people_only=True),
    notify.test_channels: Need(DEPLOY),
    notify.list_deliveries: Need(READ),
    # the console: pages
    pages.home: Need(None, stack=None, people_only=True),
    pages.ui_root: Need(None, stack=None, people_only=True),
    pages.stacks_page: Need(READ, stack=None),
    pages.stacks_fragment: Need(READ, stack=None),
    pages.stack_page: Need(READ),
    pages.stack_fragment: Need(READ),
    pages.log_page: Need(READ),
    pages.task_log_page: Need(READ),
    pages.check_page: Need(READ),
    pages.variables_page: Need(READ),
    pages.domains_page: Need(READ),
    pages.nodes_page: Need(READ, stack=None),
    pages.targets_page: Need(ADMIN, stack=None),
    pages.audit_page: Need(READ, stack=None),
    # the console: forms
    actions.logout: Need(None, stack=None),
    actions.start_run: Need(DEPLOY),
    actions.approve: Need(DEPLOY, stage=StageFrom.FORM, gate=True),
    actions.promote: Need(DEPLOY, stage=StageFrom.FORM),
    actions.rollback: Need(DEPLOY, stage=StageFrom.FORM),
    actions.cancel: Need(DEPLOY),
    actions.change_variable: Need(DEPLOY, stage=StageFrom.FORM_SCOPE),
    actions.change_secret: Need(DEPLOY, stage=StageFrom.FORM_SCOPE, redact=("value",)),
    actions.add_target: Need(ADMIN, stack=None),
    actions.check_target: Need(ADMIN, stack=None),
    actions.remove_target: Need(ADMIN, stack=None),
}

PUBLIC: dict[Callable[..., Any], str] = {
    platform.healthz: "no token (liveness, for supervisors)",
    actions.login_page: "no token (the login form)",
    actions.login: "no token (the login form checks the token it is given)",
    hooks.github_hook: "the stack's webhook secret (HMAC signature), no token",
    hooks.gitlab_hook: "the stack's webhook secret (X-Gitlab-Token), no token",
    git.smart_http: "a token as git's Basic password: `read` on the stack to fetch, `push` "
    "to push (the same decide(), with GIT_FETCH or GIT_PUSH)",
}
