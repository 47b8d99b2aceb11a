"""EKS kubeconfigs work in Lambda, which has no AWS CLI: the `aws eks get-token` user becomes a
token the deployer makes itself (a presigned STS call bound to the cluster's name)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from modelport.deploy.eks import TOKEN_PREFIX, eks_token, with_eks_tokens

EKS_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: "https://ABC.gr7.eu-west-1.eks.amazonaws.com", certificate-authority-data: "Zm9v"}
contexts:
- name: prod
  context: {cluster: prod, user: deployer}
current-context: prod
users:
- name: deployer
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [--region, eu-west-1, eks, get-token, --cluster-name, models-prod, --output, json]
- name: someone-else
  user: {token: static-token}
"""


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


def decode(token: str) -> str:
    body = token[len(TOKEN_PREFIX):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_the_token_is_a_presigned_get_caller_identity_bound_to_the_cluster():
    token = eks_token("models-prod", "eu-west-1")
    assert token.startswith(TOKEN_PREFIX) and "=" not in token
    url = urlparse(decode(token))
    query = parse_qs(url.query)
    assert url.netloc == "sts.eu-west-1.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Expires"] == ["60"]


def test_exec_users_are_replaced_and_others_kept():
    config = yaml.safe_load(with_eks_tokens(EKS_KUBECONFIG, "us-east-1"))
    users = {u["name"]: u["user"] for u in config["users"]}
    assert set(users["deployer"]) == {"token"}
    assert "sts.eu-west-1.amazonaws.com" in decode(users["deployer"]["token"])
    assert users["someone-else"] == {"token": "static-token"}
    assert config["clusters"][0]["cluster"]["server"].startswith("https://ABC")


def test_a_kubeconfig_without_eks_exec_is_left_as_it_is():
    plain = "apiVersion: v1\nusers:\n- name: a\n  user: {token: t}\n"
    assert with_eks_tokens(plain, "us-east-1") == plain
