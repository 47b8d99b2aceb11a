"""The FastAPI app of the control plane: the same app under uvicorn and, through Mangum, in Lambda."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from modelport import __version__
from modelport.api import errors
from modelport.api.deps import Owner
from modelport.api.idempotency import Idempotency
from modelport.api.routers import deployments, models, versions
from modelport.api.schemas import MeOut
from modelport.domain.paths import namespace_for
from modelport.settings import Settings
from modelport.store.repository import Store

API_PREFIX = "/api/v1"
#: the dashboard: static files shipped in the package (``modelport/api/ui``), no build step
UI_PATH = "/ui"


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    app = FastAPI(
        title="modelport",
        version=__version__,
        description="Upload a trained model, deploy it, get a URL that serves predictions.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store or Store(settings)
    app.state.objects = None
    app.state.idempotency = Idempotency(settings)
    errors.install(app)

    # The prefix is given where the app includes this router, not on the router itself: FastAPI
    # checks an include without a prefix for empty paths by building every nested route's
    # effective context at once, work that Lambda would bill as init and that the first request
    # redoes for its own routes anyway (bench/api_cold_start.py).
    api = APIRouter()

    @api.get("/me", response_model=MeOut, tags=["users"])
    def me(owner: Owner) -> MeOut:
        return MeOut(owner=owner, namespace=namespace_for(owner))

    api.include_router(models.router)
    api.include_router(versions.router, dependencies=[Depends(versions.refuse_oversized_upload)])
    api.include_router(deployments.router)
    app.include_router(api, prefix=API_PREFIX)

    @app.get(UI_PATH, include_in_schema=False)
    def ui_root() -> RedirectResponse:
        # relative, so it also works under an API Gateway stage path
        return RedirectResponse(UI_PATH.lstrip("/") + "/", status_code=307)

    # Static files only, no auth: every figure the dashboard shows comes from /api/v1 with the bearer key.
    app.mount(UI_PATH, StaticFiles(packages=[("modelport.api", "ui")], html=True), name="ui")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app


def from_environment() -> FastAPI:
    """An entry point for ``uvicorn modelport.api.app:from_environment --factory``: the settings
    come from this process's environment."""
    return create_app(Settings())
