"""The modelport model server: one model, three protocols (seed, KServe V1, Open Inference V2).

Starting it as a process (the Helm chart, the local platform, the tests) follows the process
contract in ``modelport.domain.model_server``, which also lists every environment variable::

    config = ServerConfig(model_uri="s3://models/models/1/versions/2/model.joblib", port=8123,
                          root_path="/api/v1/predict/7", model_sha256=...)
    subprocess.Popen(server_argv(sys.executable), env={**os.environ, **config.to_env()})

The process reads its settings once, ``ServerConfig.from_env(os.environ)`` in ``server.main``, and
hands that config down; nothing else here reads the environment for settings. This package imports
only ``modelport.domain`` from the rest of modelport.

Readiness: ``GET /readyz`` (``READY_PATH``, or ``/v2/health/ready``) answers 200 once the model is
loaded and 503 before; liveness: ``GET /healthz`` (``LIVE_PATH``). If the model (or its
requirements) cannot be loaded the process prints why on stderr, ending with the contract's one
``failure_line(reason)``, and exits with status 1. ``modelport serve`` is the same server from the
command line.

Modules (requests flow down, as in MLServer's endpoints -> data plane -> codecs -> runtime):
``server`` (main, uvicorn, logging) -> ``asgi`` (transport: ASGI, routing, token, body limits) ->
``dataplane`` (what the protocols share: prediction, readiness, metrics) -> ``protocols/``
(``seed``, ``v1``, ``v2``: one codec each) and ``batcher`` -> ``runtime`` (the loaded model).
``loading`` is the load step (``fetch``, ``environment``, then ``runtime``); ``standby`` a
pre-warmed server. In-process use (tests): ``asgi.App`` is the ASGI app, ``loading.load`` the
whole load step.
"""
