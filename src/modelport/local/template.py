"""What template.yaml says about each function, for the local platform and the tests.

The local platform runs the same handlers as Lambda, fed by pollers that emulate Lambda's event
source mappings. Those pollers take their settings (batch size, batching window, filters, partial
batch responses, bisecting, retries, record age, dead-letter destinations, the queue's redrive)
from here, read from template.yaml itself, so the template and the local platform cannot disagree.

    from modelport.local.template import load_template
    app = load_template()                       # template.yaml at the repo root (or MODELPORT_TEMPLATE)
    deployer = app.functions["deployer"]        # keyed by the folder under functions/
    stream = deployer.event_source              # the one non-HTTP event source, or None
    stream.batch_size, stream.filter_patterns, stream.maximum_retry_attempts, ...
    app.table.global_secondary_indexes

Values AWS would default are filled in with AWS's defaults, so a poller never has to know them.
Intrinsic functions (``!Ref``, ``!GetAtt`` ...) are kept as :class:`Intrinsic` values; references
to resources of the template are resolved to their logical ids where that is what a poller needs
(the stream's table, the queue, the dead-letter queue).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

TEMPLATE_ENV = "MODELPORT_TEMPLATE"

# --- a YAML loader that understands CloudFormation's short tags ---------------------------------

_INTRINSICS = {
    "Ref": "Ref",
    "GetAtt": "Fn::GetAtt",
    "Sub": "Fn::Sub",
    "Join": "Fn::Join",
    "If": "Fn::If",
    "Equals": "Fn::Equals",
    "Not": "Fn::Not",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "Condition": "Condition",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "FindInMap": "Fn::FindInMap",
    "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue",
    "Base64": "Fn::Base64",
    "Cidr": "Fn::Cidr",
    "Length": "Fn::Length",
    "ToJsonString": "Fn::ToJsonString",
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's short-form tags, loaded as their long (JSON) form.

    ``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``,
    ``!Sub s`` -> ``{"Fn::Sub": "s"}`` and so on, exactly as CloudFormation reads them.
    """


def _construct(tag: str, name: str) -> None:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    CfnLoader.add_constructor(f"!{tag}", construct)


for _tag, _name in _INTRINSICS.items():
    _construct(_tag, _name)


def load_yaml(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a template")
    return data


def ref_target(value: Any) -> str | None:
    """The logical id that ``!Ref X`` or ``!GetAtt X.Attr`` points at; None for anything else."""
    if isinstance(value, dict) and len(value) == 1:
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            if isinstance(target, list) and target:
                return str(target[0])
            if isinstance(target, str):
                return target.split(".", 1)[0]
    return None


# --- the models --------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


EventType = Literal["DynamoDB", "SQS", "Schedule", "ScheduleV2", "HttpApi", "Api", "Kinesis", "S3", "SNS"]


class QueueConfig(_Model):
    """An SQS queue of the template, with what its redrive policy says."""

    logical_id: str
    visibility_timeout_seconds: int = 30
    message_retention_seconds: int = 345600
    dead_letter_queue: str | None = Field(default=None, description="logical id of the redrive target")
    max_receive_count: int | None = None


class EventSourceConfig(_Model):
    """One event of a function, as the local poller must emulate it (AWS defaults filled in)."""

    function: str = Field(description="the function's folder name under functions/")
    name: str = Field(description="the event's key under Events in the template")
    type: str
    # -- where from
    source: str | None = Field(default=None, description="logical id of the table, queue ... it reads")
    starting_position: str | None = None
    # -- batching
    batch_size: int | None = None
    maximum_batching_window_seconds: int = 0
    parallelization_factor: int | None = None
    filter_patterns: list[dict[str, Any]] = Field(default_factory=list)
    # -- failures
    report_batch_item_failures: bool = False
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int | None = Field(
        default=None, description="stream sources: -1 means retry until the record expires"
    )
    maximum_record_age_seconds: int | None = Field(default=None, description="stream sources: -1 = no limit")
    on_failure_destination: str | None = Field(default=None, description="logical id of the DLQ (streams)")
    on_failure_type: str | None = None
    maximum_concurrency: int | None = None
    # -- SQS: the queue itself decides retries (maxReceiveCount) and the dead-letter queue
    queue: QueueConfig | None = None
    # -- schedules and HTTP routes
    schedule: str | None = None
    path: str | None = None
    method: str | None = None
    authorizer: str | None = Field(default=None, description="'NONE' for public routes, else the authorizer")

    @property
    def is_poller(self) -> bool:
        """Sources that Lambda polls (the local platform runs a poller for each)."""
        return self.type in ("DynamoDB", "SQS", "Kinesis")

    @property
    def max_receive_count(self) -> int | None:
        return self.queue.max_receive_count if self.queue else None

    @property
    def dead_letter_queue(self) -> str | None:
        """Where records that keep failing go: the stream's on-failure queue or the queue's DLQ."""
        if self.on_failure_destination:
            return self.on_failure_destination
        return self.queue.dead_letter_queue if self.queue else None


class FunctionConfig(_Model):
    logical_id: str
    name: str = Field(description="folder name under functions/ (api, deployer, artifacts, reconcile)")
    code_uri: str
    handler: str
    runtime: str
    timeout_seconds: int
    memory_mb: int
    layers: list[str] = Field(default_factory=list, description="logical ids of the layers")
    environment: dict[str, Any] = Field(
        default_factory=dict, description="name -> literal value, or the intrinsic as the template has it"
    )
    events: list[EventSourceConfig] = Field(default_factory=list)

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def handler_path(self, root: Path) -> Path:
        """The handler's file, relative to the template's folder ``root``."""
        return root / self.code_uri / (self.handler_module.replace(".", "/") + ".py")

    @property
    def event_source(self) -> EventSourceConfig | None:
        """The function's single non-HTTP event (stream, queue or schedule), if it has one."""
        sources = [event for event in self.events if event.type not in ("HttpApi", "Api")]
        if len(sources) > 1:
            raise ValueError(f"{self.logical_id} has {len(sources)} non-HTTP event sources")
        return sources[0] if sources else None


class IndexConfig(_Model):
    name: str
    hash_key: str
    range_key: str | None = None
    projection: str


class TableConfig(_Model):
    logical_id: str
    hash_key: str
    range_key: str | None
    attribute_types: dict[str, str]
    global_secondary_indexes: list[IndexConfig]
    ttl_attribute: str | None
    stream_view_type: str | None
    billing_mode: str
    point_in_time_recovery: bool
    sse_enabled: bool

    def create_table_kwargs(self, table_name: str) -> dict[str, Any]:
        """Arguments for boto3's ``create_table`` that build the same table (tests, stand-ins)."""
        def keys(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
            schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
            if range_key:
                schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
            return schema

        kwargs: dict[str, Any] = {
            "TableName": table_name,
            "BillingMode": self.billing_mode,
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": kind} for name, kind in self.attribute_types.items()
            ],
            "KeySchema": keys(self.hash_key, self.range_key),
        }
        if self.global_secondary_indexes:
            kwargs["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": keys(index.hash_key, index.range_key),
                    "Projection": {"ProjectionType": index.projection},
                }
                for index in self.global_secondary_indexes
            ]
        if self.stream_view_type:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": self.stream_view_type}
        return kwargs


class TemplateConfig(_Model):
    path: str
    functions: dict[str, FunctionConfig]
    queues: dict[str, QueueConfig]
    table: TableConfig | None

    def function(self, name: str) -> FunctionConfig:
        """By folder name (``deployer``) or logical id (``DeployerFunction``)."""
        if name in self.functions:
            return self.functions[name]
        for function in self.functions.values():
            if function.logical_id == name:
                return function
        raise KeyError(f"no function {name!r} in {self.path}")

    def event_sources(self) -> dict[str, EventSourceConfig]:
        """Function folder name -> its polled event source (stream or queue), for the local pollers."""
        return {
            name: function.event_source
            for name, function in self.functions.items()
            if function.event_source is not None and function.event_source.is_poller
        }


# --- reading -----------------------------------------------------------------------------------

def default_template_path() -> Path:
    """``MODELPORT_TEMPLATE`` if set, else template.yaml at the root of this source tree."""
    if os.environ.get(TEMPLATE_ENV):
        return Path(os.environ[TEMPLATE_ENV])
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "template.yaml"
        if candidate.is_file() and (parent / "src" / "modelport").is_dir():
            return candidate
    for candidate in (Path.cwd() / "template.yaml",):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"template.yaml not found (set {TEMPLATE_ENV})")


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int | float | str):
        return int(value)
    raise ValueError(f"not a literal number (an intrinsic?): {value!r}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _queue(logical_id: str, resource: dict[str, Any]) -> QueueConfig:
    props = resource.get("Properties") or {}
    redrive = props.get("RedrivePolicy") or {}
    if isinstance(redrive, str):
        redrive = json.loads(redrive)
    return QueueConfig(
        logical_id=logical_id,
        visibility_timeout_seconds=_int(props.get("VisibilityTimeout"), 30) or 30,
        message_retention_seconds=_int(props.get("MessageRetentionPeriod"), 345600) or 345600,
        dead_letter_queue=ref_target(redrive.get("deadLetterTargetArn")) if redrive else None,
        max_receive_count=_int(redrive.get("maxReceiveCount")) if redrive else None,
    )


def _patterns(filter_criteria: dict[str, Any] | None) -> list[dict[str, Any]]:
    patterns = []
    for item in (filter_criteria or {}).get("Filters") or []:
        pattern = item.get("Pattern")
        patterns.append(json.loads(pattern) if isinstance(pattern, str) else pattern)
    return patterns


def _event(function: str, name: str, event: dict[str, Any], queues: dict[str, QueueConfig]) -> EventSourceConfig:
    kind = event["Type"]
    props = event.get("Properties") or {}
    response_types = props.get("FunctionResponseTypes") or []
    common: dict[str, Any] = {
        "function": function,
        "name": name,
        "type": kind,
        "filter_patterns": _patterns(props.get("FilterCriteria")),
        "report_batch_item_failures": "ReportBatchItemFailures" in response_types,
        "maximum_batching_window_seconds": _int(props.get("MaximumBatchingWindowInSeconds"), 0),
    }
    if kind in ("DynamoDB", "Kinesis"):
        on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure")) or {}
        return EventSourceConfig(
            **common,
            source=ref_target(props.get("Stream")),
            starting_position=props.get("StartingPosition"),
            batch_size=_int(props.get("BatchSize"), 100),
            parallelization_factor=_int(props.get("ParallelizationFactor"), 1),
            bisect_batch_on_function_error=_bool(props.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=_int(props.get("MaximumRetryAttempts"), -1),
            maximum_record_age_seconds=_int(props.get("MaximumRecordAgeInSeconds"), -1),
            on_failure_destination=ref_target(on_failure.get("Destination")),
            on_failure_type=on_failure.get("Type"),
        )
    if kind == "SQS":
        queue_id = ref_target(props.get("Queue"))
        return EventSourceConfig(
            **common,
            source=queue_id,
            batch_size=_int(props.get("BatchSize"), 10),
            maximum_concurrency=_int((props.get("ScalingConfig") or {}).get("MaximumConcurrency")),
            queue=queues.get(queue_id) if queue_id else None,
        )
    if kind in ("Schedule", "ScheduleV2"):
        return EventSourceConfig(**common, schedule=props.get("Schedule") or props.get("ScheduleExpression"))
    if kind in ("HttpApi", "Api"):
        auth = props.get("Auth") or {}
        return EventSourceConfig(
            **common,
            source=ref_target(props.get("ApiId") or props.get("RestApiId")),
            path=props.get("Path"),
            method=props.get("Method"),
            authorizer=auth.get("Authorizer"),
        )
    return EventSourceConfig(**common)


def _layers(value: Any) -> list[str]:
    out = []
    for item in value or []:
        target = ref_target(item)
        out.append(target if target else str(item))
    return out


def _table(logical_id: str, resource: dict[str, Any]) -> TableConfig:
    props = resource.get("Properties") or {}

    def keys(schema: list[dict[str, str]]) -> tuple[str, str | None]:
        hash_key = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
        range_key = next((k["AttributeName"] for k in schema if k["KeyType"] == "RANGE"), None)
        return hash_key, range_key

    hash_key, range_key = keys(props["KeySchema"])
    indexes = []
    for index in props.get("GlobalSecondaryIndexes") or []:
        index_hash, index_range = keys(index["KeySchema"])
        indexes.append(
            IndexConfig(
                name=index["IndexName"], hash_key=index_hash, range_key=index_range,
                projection=(index.get("Projection") or {}).get("ProjectionType", "KEYS_ONLY"),
            )
        )
    ttl = props.get("TimeToLiveSpecification") or {}
    return TableConfig(
        logical_id=logical_id,
        hash_key=hash_key,
        range_key=range_key,
        attribute_types={a["AttributeName"]: a["AttributeType"] for a in props.get("AttributeDefinitions") or []},
        global_secondary_indexes=indexes,
        ttl_attribute=ttl.get("AttributeName") if _bool(ttl.get("Enabled", False)) else None,
        stream_view_type=(props.get("StreamSpecification") or {}).get("StreamViewType"),
        billing_mode=props.get("BillingMode", "PROVISIONED"),
        point_in_time_recovery=_bool(
            (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled", False)
        ),
        sse_enabled=_bool((props.get("SSESpecification") or {}).get("SSEEnabled", False)),
    )


def parse_template(data: dict[str, Any], path: str = "template.yaml") -> TemplateConfig:
    resources: dict[str, dict[str, Any]] = data.get("Resources") or {}
    globals_ = ((data.get("Globals") or {}).get("Function")) or {}
    queues = {
        logical_id: _queue(logical_id, resource)
        for logical_id, resource in resources.items()
        if resource.get("Type") == "AWS::SQS::Queue"
    }
    functions: dict[str, FunctionConfig] = {}
    tables = [lid for lid, r in resources.items() if r.get("Type") == "AWS::DynamoDB::Table"]
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        code_uri = str(props["CodeUri"])
        name = Path(code_uri.rstrip("/")).name
        environment = dict(((globals_.get("Environment") or {}).get("Variables")) or {})
        environment.update(((props.get("Environment") or {}).get("Variables")) or {})
        events = [
            _event(name, event_name, event, queues) for event_name, event in (props.get("Events") or {}).items()
        ]
        functions[name] = FunctionConfig(
            logical_id=logical_id,
            name=name,
            code_uri=code_uri.rstrip("/"),
            handler=props.get("Handler") or globals_["Handler"],
            runtime=props.get("Runtime") or globals_["Runtime"],
            timeout_seconds=_int(props.get("Timeout"), _int(globals_.get("Timeout"), 3)) or 3,
            memory_mb=_int(props.get("MemorySize"), _int(globals_.get("MemorySize"), 128)) or 128,
            # SAM appends a function's layers to the global ones
            layers=_layers(globals_.get("Layers")) + _layers(props.get("Layers")),
            environment=environment,
            events=events,
        )
    return TemplateConfig(
        path=path,
        functions=functions,
        queues=queues,
        table=_table(tables[0], resources[tables[0]]) if len(tables) == 1 else None,
    )


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> TemplateConfig:
    return parse_template(load_yaml(Path(path)), path)


def load_template(path: Path | str | None = None) -> TemplateConfig:
    """Read and interpret template.yaml (cached until the file changes)."""
    resolved = Path(path) if path is not None else default_template_path()
    resolved = resolved.resolve()
    return _load(str(resolved), resolved.stat().st_mtime_ns)


def event_source(function: str, path: Path | str | None = None) -> EventSourceConfig | None:
    """Shortcut: the event source of one function (``deployer``, ``artifacts``, ``reconcile``)."""
    return load_template(path).function(function).event_source
