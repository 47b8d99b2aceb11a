"""The single table's shape: key names, index names, record-type prefixes.

template.yaml declares the same table (a test checks they agree); the deployer's stream
FilterCriteria selects records whose partition key starts with ``DEPLOYMENT_PREFIX``.
"""

from __future__ import annotations

PK = "PK"
SK = "SK"
GSI1 = "GSI1"  # owner listings: GSI1PK = OWNER#{owner}, GSI1SK = {TYPE}#{id:012d}
GSI1PK, GSI1SK = "GSI1PK", "GSI1SK"
GSI2 = "GSI2"  # children of a model: GSI2PK = MODEL#{model_id}, GSI2SK = {TYPE}#{id:012d}
GSI2PK, GSI2SK = "GSI2PK", "GSI2SK"
TTL_ATTRIBUTE = "ttl"

USER_PREFIX = "USER#"
APIKEY_PREFIX = "APIKEY#"
COUNTER_PREFIX = "COUNTER#"
MODEL_PREFIX = "MODEL#"
VERSION_PREFIX = "VERSION#"
DEPLOYMENT_PREFIX = "DEPLOYMENT#"
METRICS_PREFIX = "METRICS#"

#: the stream filter the deployer's event source uses (template.yaml and the local poller)
DEPLOYER_FILTER_PATTERN = {"dynamodb": {"Keys": {PK: {"S": [{"prefix": DEPLOYMENT_PREFIX}]}}}}
