"""Repositories: every read and write of the table, as operations on domain entities.

Rules kept here, in DynamoDB conditions and transactions, so no race can break them:
- a record is reached only through its owner (another owner's id is NotFound, like a missing id);
- ids come from atomic counters; names of models (per owner) and version labels (per model) are
  unique through guard items written in the same transaction as the record;
- ``Version.deployments`` and ``Model.deployments`` count the deployments whose desired version
  they hold; every write that moves a deployment changes the counts in the same transaction, so
  "is this version in use" is one conditional write, not a query that can go stale;
- a change of desired state adds one to ``Deployment.generation``; the deployer writes back what
  it converged to with a condition on that generation, so it never overwrites a newer request.

One repository module per entity (``users``, ``models``, ``versions``, ``deployments``,
``metrics``) on the
shared base ``table.Table``; every key shape is in ``keys.py``. ``Store`` is all of them on one
connection: what the services and the deployer are given.
"""

from __future__ import annotations

from modelport.store.deployments import DeploymentRepository
from modelport.store.metrics import MetricsRepository
from modelport.store.models import ModelRepository
from modelport.store.table import Page
from modelport.store.users import UserRepository

__all__ = ["Page", "Store"]


class Store(UserRepository, ModelRepository, DeploymentRepository, MetricsRepository):
    """The table, every repository on one connection. One instance per process is enough."""
