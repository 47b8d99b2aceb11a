"""The use cases: every business rule of the control plane, in plain functions that take their
dependencies (the store, the object store, settings) as arguments.

Routers, the S3 event handler, the CLI and the local platform call these; the store below keeps
only what DynamoDB must guarantee under races (conditions and transactions), the routers only
HTTP. One module per subject: ``deployments``, ``users`` (API keys), ``versions`` (uploads and
registration), ``artifact_events`` (what an S3 upload event does) and ``auto_deploy``.
"""
