"""YAML definitions -> validated objects, with path:line:col errors."""

from .inputs import InputError, masked, parse_pairs, validate_inputs
from .loader import DefinitionError, Problem, ProjectNotFound, did_you_mean, find_project_root, load_project
from .objects import Job, Method, Model, Project, Step, Workflow

__all__ = [
    "DefinitionError",
    "InputError",
    "Job",
    "Method",
    "Model",
    "Problem",
    "Project",
    "ProjectNotFound",
    "Step",
    "Workflow",
    "did_you_mean",
    "find_project_root",
    "load_project",
    "masked",
    "parse_pairs",
    "validate_inputs",
]
