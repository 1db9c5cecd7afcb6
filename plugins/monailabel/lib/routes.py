"""Fixes the app applies at start to MONAI Label 0.8.5's own web routes (docs/plugin.md, "Server fixes").

- `POST /infer/{model}` and `POST /activelearning/{strategy}` are `async` endpoints that run the model synchronously,
  so while one inference runs the event loop answers nothing else (`/info/`, the viewer's DICOMweb proxy, a second
  viewer). They are re-registered with the same parameters, the blocking work running in a worker thread; at most
  `MONAI_LABEL_INFER_CONCURRENCY` inferences run at once (1 when it is unset or negative, as before).
- `POST /infer/{model}?output=dicom_seg` converts through dcmqi in MONAI Label; here the request asks the app for its
  own DICOM-SEG instead (`result_format: dicom_seg`), which needs no external tool.
- `GET /ohif/{path}` joins nested paths with `os.pathsep` (":" on Linux), so every file below a sub-folder of the
  viewer (assets/, dicom-microscopy-viewer/) came back as index.html; it is served from the right file.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

log = logging.getLogger(__name__)

_MARK = "_medmrcnn_route"


def _server_app() -> FastAPI | None:
    """The running server's FastAPI app (None when the app is used without `monailabel start_server`)."""
    module = sys.modules.get("monailabel.app")
    return getattr(module, "app", None)


def _routers(router: Any) -> Iterator[Any]:
    """`router` and the routers included into it (FastAPI >= 0.13x keeps them as `_IncludedRouter` entries)."""
    yield router
    for route in router.routes:
        if hasattr(route, "original_router"):
            yield from _routers(route.original_router)


def _replace(app: FastAPI, path: str, method: str, endpoint: Callable[..., Any]) -> bool:
    """Swap the endpoint of `method path` for `endpoint` (which takes the original's parameters), in place."""
    for router in _routers(app.router):
        for i, route in enumerate(router.routes):
            if not (isinstance(route, APIRoute) and route.path == path and method in route.methods):
                continue
            if getattr(route.endpoint, _MARK, False):
                return False
            endpoint.__signature__ = inspect.signature(route.endpoint)  # type: ignore[attr-defined]
            setattr(endpoint, _MARK, True)
            router.routes[i] = APIRoute(
                route.path, endpoint, methods=[method], name=route.name, summary=route.summary, tags=route.tags,
                responses=route.responses, include_in_schema=route.include_in_schema,
                response_class=route.response_class,
            )
            if hasattr(router, "_mark_routes_changed"):  # FastAPI caches the routes of included routers
                router._mark_routes_changed()
            app.openapi_schema = None
            return True
    log.warning("MONAI Label route %s %s not found: left as it is", method, path)
    return False


def _off_loop(call: Callable[[dict[str, Any]], Any], limiter: anyio.CapacityLimiter | None) -> Callable[..., Any]:
    """An async endpoint that runs `call(params)` in a worker thread (under `limiter`) and awaits it."""

    async def endpoint(**params: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(call, params), limiter=limiter)

    return endpoint


def _infer(params: dict[str, Any]) -> Any:
    """MONAI Label's `run_inference`; `output=dicom_seg` asks the app for its own DICOM-SEG and returns that file."""
    from monailabel.endpoints.infer import ResultType, run_inference

    kwargs = {k: v for k, v in params.items() if k != "user"}
    if kwargs.get("output") == ResultType.dicom_seg:
        try:
            request = json.loads(kwargs.get("params") or "{}")
        except json.JSONDecodeError:
            raise HTTPException(status_code=400, detail="params is not valid JSON") from None
        kwargs["params"] = json.dumps({**request, "result_format": "dicom_seg", "result_extension": ".dcm"})
        kwargs["output"] = ResultType.image
    return run_inference(**kwargs)


def _sample(params: dict[str, Any]) -> Any:
    from monailabel.endpoints.activelearning import sample

    user = params.get("user")
    return sample(params["strategy"], params.get("params"), getattr(user, "username", None))


def _ohif_file(ohif_dir: Path) -> Callable[..., Any]:
    """GET /ohif/{path}: the viewer's file at `path` (nested folders included), else index.html (its routes)."""
    from monailabel.utils.others.generic import get_mime_type

    root = ohif_dir.resolve()

    async def endpoint(path: str = "", **_: Any) -> FileResponse:
        file = (root / path).resolve() if path else root / "index.html"
        if not (file.is_file() and file.is_relative_to(root)):
            file = root / "index.html"
        if not file.is_file():
            raise HTTPException(status_code=404, detail="Resource NOT Found")
        return FileResponse(file, media_type=get_mime_type(str(file)))

    return endpoint


def apply_server_fixes(infer_concurrency: int) -> list[str]:
    """Re-register the routes named in this module's docstring on the running server; return what was replaced."""
    app = _server_app()
    if app is None:
        return []
    from monailabel.config import settings

    prefix = settings.MONAI_LABEL_API_STR
    infer_limiter = anyio.CapacityLimiter(infer_concurrency if infer_concurrency > 0 else 1)
    ohif_dir = Path(sys.modules["monailabel.app"].__file__).parent / "endpoints" / "static" / "ohif"
    fixes = {
        f"{prefix}/infer/{{model}}": ("POST", _off_loop(_infer, infer_limiter)),
        f"{prefix}/activelearning/{{strategy}}": ("POST", _off_loop(_sample, None)),
        f"{prefix}/ohif/{{path:path}}": ("GET", _ohif_file(ohif_dir)),
    }
    done = [f"{method} {path}" for path, (method, endpoint) in fixes.items() if _replace(app, path, method, endpoint)]
    if done:
        log.info("re-registered MONAI Label routes: %s", ", ".join(done))
    return done
