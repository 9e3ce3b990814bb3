"""An organizer's evaluation config (YAML) and its companion files, checked strictly.

Two formats are one model. evalq's own:
```yaml
image: ghcr.io/challenge/sim-eval
image_tag: 2026.11.3
compute_config: {accelerator: nvidia-l4, gpus: 1, cpu: 8, memory: 32Gi}
args: [python, -m, sim_eval, --config, /etc/configs/eval.yaml]   # the container's args
namespace: challenge
env: {EVAL_TRACK: manipulation}
secrets: [team-tokens]
tags: [finals]                                                    # tracking tags
```
and the old GKE tool's (`version`, `image`, `image_tag`, `compute_config`, `helm`,
`mlflow_config`, `model_config`, `tracking_config`: `sections.py`), as its users have it.
The pod runs the image's own command (`command`, default its entrypoint) with `args`
(default the old tool's `--trace evaluate`); `prefect_in_pod: true` keeps the path for images
that carry eval-jobqueue (the pod runs the `run-command` flow with `args` as its argv).
Any problem is an `InputError` naming the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from generate.errors import InputError
from generate.jsonio import describe_validation_error, read_text
from workpools.kubernetes.configmap import MAX_BYTES, MOUNT_PATH
from workpools.kubernetes.evaluation import Compute, KubernetesEvaluation
from workpools.kubernetes.sections import (
    Helm,
    MlflowConfig,
    ModelConfig,
    TrackingConfig,
)

CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
DEFAULT_ARGS = ["--trace", "evaluate"]
"""The old GKE tool's container args: the image's entrypoint runs its evaluation."""
JOB_ENVIRONMENT = ("CONFIG_VERSION", "CONFIG_PATH_GIT_REPO", "HELM_CONFIG_PATH_GIT_REPO", "JOB_NAME")
"""Set by evalq in the pod (`jobspec.environment`): a config's `env` may not set them."""


class EvaluationConfig(BaseModel):
    """What organizers write per evaluation, in either format."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), coerce_numbers_to_str=True)

    version: str | None = Field(None, description="The old tool's config version (e.g. v4); read by the image.")
    image: str = Field(min_length=1, description="Image repository.")
    image_tag: str = Field(min_length=1, description="Tag or `sha256:` digest.")
    compute_config: Compute = Field(default_factory=Compute)
    command: list[str] | None = Field(None, min_length=1, description="The container's command (default: the image's entrypoint).")
    args: list[str] | None = Field(None, min_length=1, description="The container's args (default `--trace evaluate`).")
    prefect_in_pod: bool = Field(False, description="The image has eval-jobqueue: the pod runs the run-command flow with `args`.")
    namespace: str | None = None
    service_account: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, description="Tracking tags, added to the flow run's.")
    helm: Helm | None = None
    mlflow_config: MlflowConfig | None = None
    model: ModelConfig | None = Field(None, alias="model_config")
    tracking_config: TrackingConfig | None = None

    @model_validator(mode="after")
    def consistent(self) -> "EvaluationConfig":
        taken = [name for name in JOB_ENVIRONMENT if name in self.env]
        if taken:
            raise PydanticCustomError("reserved", "env.{name}: evalq sets it in the pod (the commit, paths and Job name)", {"name": taken[0]})
        artifact = self.model.mlflow_artifact if self.model else None
        if artifact is not None and self.mlflow_config is None:
            raise PydanticCustomError("needs", "model_config.mlflow_artifact: needs mlflow_config.tracking_uri to download from")
        if self.prefect_in_pod:
            if not self.args:
                raise PydanticCustomError("needs", "args: prefect_in_pod runs `args` as the command in the pod: give them")
            if self.command:
                raise PydanticCustomError("conflict", "command: with prefect_in_pod the pod runs the run-command flow; put the command in args")
            if self.model and (artifact or self.model.gs_uri):
                raise PydanticCustomError("conflict", "model_config: the model download needs the image's own command (prefect_in_pod: false)")
        return self

    @property
    def container_args(self) -> list[str]:
        return list(self.args) if self.args else list(DEFAULT_ARGS)

    def evaluation(self, git_commit: str | None) -> KubernetesEvaluation:
        """The Kubernetes mapping of this config (`evaluation.job_variables`, `flow_run_tags`)."""
        fields = self.model_dump(include={"image", "image_tag", "namespace", "service_account", "env", "secrets"})
        return KubernetesEvaluation(**fields, compute=self.compute_config, git_commit=git_commit, tags=self.tracking_tags())

    def tracking_tags(self) -> list[str]:
        """Flow-run tags from the tracking names: experiment, its tags, the model's origin, then `tags`."""
        tags: list[str] = []
        if self.tracking_config:
            tags.append(f"experiment:{self.tracking_config.experiment_name}")
            tags += [f"{key}:{value}" if value else key for key, value in self.tracking_config.tag_pairs()]
        if self.model and self.model.mlflow_artifact:
            tags.append(f"model-run-id:{self.model.mlflow_artifact.run_id}")
        if self.model and self.model.gs_uri:
            tags.append(f"model-gs-uri:{self.model.gs_uri}")
        return tags + [tag for tag in self.tags if tag not in tags]


def parse_config(text: str, path: Path) -> EvaluationConfig:
    """The config in `text` (read from `path`); `InputError(path, "field: problem")` when it is not one."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(path, f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping of settings (image, image_tag, compute_config, ...)")
    try:
        return EvaluationConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(path, describe_validation_error(exc)) from None


def load_config(path: Path) -> EvaluationConfig:
    return parse_config(read_text(path), path)


def read_config_files(paths: list[Path]) -> dict[str, str]:
    """Companion files by name, as mounted under /etc/configs: text, unique names, at most 1 MB in all."""
    files: dict[str, str] = {}
    for path in paths:
        if not CONFIG_KEY.match(path.name):
            raise InputError(path, "file name must be letters, digits, '-', '_' or '.' (it becomes a ConfigMap key)")
        if path.name in files:
            raise InputError(path, f"two config files named {path.name!r}: both would be {MOUNT_PATH}/{path.name}")
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(path, "file not found") from None
        except UnicodeDecodeError:
            raise InputError(path, "not UTF-8 text (a ConfigMap carries text files)") from None
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror}") from None
    size = sum(len(name) + len(text.encode()) for name, text in files.items())
    if size > MAX_BYTES:
        raise InputError(paths[-1], f"config files total {size} bytes; a ConfigMap holds at most {MAX_BYTES}")
    return files
