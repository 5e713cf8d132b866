"""Distillation routes: the route file format (:mod:`.spec`) and the stage runner (:mod:`.runner`)."""

from mfv2.training.routes.runner import FINAL, PlannedStage, RouteResult, plan_route, run_route
from mfv2.training.routes.spec import Route, StageInit, StageSpec, builtin_routes, load_route, scale_config

__all__ = [
    "StageInit",
    "StageSpec",
    "Route",
    "PlannedStage",
    "RouteResult",
    "builtin_routes",
    "load_route",
    "scale_config",
    "plan_route",
    "run_route",
    "FINAL",
]
