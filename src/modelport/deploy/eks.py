"""EKS authentication without the AWS CLI.

A kubeconfig for EKS usually authenticates by running ``aws eks get-token``; Lambda has no AWS
CLI. The token is only a presigned STS GetCallerIdentity URL bound to the cluster's name (the
scheme aws-iam-authenticator defines), so the deployer makes it with botocore, under its own IAM
role, and writes it into the kubeconfig in place of the exec entry. Tokens live 15 minutes; the
caller refreshes them (``TOKEN_LIFETIME_SECONDS``).
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

TOKEN_PREFIX = "k8s-aws-v1."
TOKEN_LIFETIME_SECONDS = 10 * 60  # refresh well before EKS's 15 minutes
_CLUSTER_HEADER = "x-k8s-aws-id"


def eks_token(cluster_name: str, region: str) -> str:
    import botocore.session

    session = botocore.session.get_session()
    sts = session.create_client("sts", region_name=region, endpoint_url=f"https://sts.{region}.amazonaws.com")

    def bind_cluster(request: Any, **_: Any) -> None:
        request.headers[_CLUSTER_HEADER] = cluster_name

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", bind_cluster)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _get_token_args(user: dict[str, Any]) -> tuple[str, str | None] | None:
    """(cluster name, region) when a kubeconfig user runs ``aws eks get-token``."""
    exec_ = user.get("exec") or {}
    command = str(exec_.get("command", ""))
    args = [str(a) for a in exec_.get("args") or []]
    if not (command.endswith("aws") and "get-token" in args and "eks" in args):
        return None

    def value(flag: str) -> str | None:
        return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None

    cluster = value("--cluster-name") or value("--cluster-id")
    if cluster is None:
        return None
    region = value("--region")
    for item in exec_.get("env") or []:
        if region is None and item.get("name") in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            region = str(item.get("value"))
    return cluster, region


def with_eks_tokens(kubeconfig_text: str, default_region: str) -> str:
    """The kubeconfig with every ``aws eks get-token`` exec user replaced by a fresh token."""
    config = yaml.safe_load(kubeconfig_text) or {}
    changed = False
    for entry in config.get("users") or []:
        user = entry.get("user") or {}
        found = _get_token_args(user)
        if found is None:
            continue
        cluster, region = found
        entry["user"] = {"token": eks_token(cluster, region or default_region)}
        changed = True
    return yaml.safe_dump(config, sort_keys=False) if changed else kubeconfig_text
