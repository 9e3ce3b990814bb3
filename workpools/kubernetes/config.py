"""An organizer's evaluation config (YAML) and its companion files, checked strictly.

```yaml
image: ghcr.io/challenge/sim-eval
image_tag: 2026.11.3
compute_config: {accelerator: nvidia-l4, gpus: 1, cpu: 8, memory: 32Gi}
args: [python, -m, sim_eval, --config, /etc/configs/eval.yaml]   # run in the pod
namespace: challenge
env: {EVAL_TRACK: manipulation}
secrets: [team-tokens]
tags: [finals]                                                    # tracking tags
```
Any problem is an `InputError` naming the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generate.errors import InputError
from generate.jsonio import describe_validation_error, read_text
from workpools.kubernetes.configmap import MAX_BYTES, MOUNT_PATH
from workpools.kubernetes.evaluation import Compute, KubernetesEvaluation

CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class EvaluationConfig(BaseModel):
    """What organizers write per evaluation."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, description="Image repository.")
    image_tag: str = Field(min_length=1, description="Tag or `sha256:` digest.")
    compute_config: Compute = Field(default_factory=Compute)
    args: list[str] = Field(min_length=1, description="The evaluation's argv in the pod (program first; no shell).")
    namespace: str | None = None
    service_account: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, description="Tracking tags, added to the flow run's.")

    def evaluation(self, git_commit: str | None) -> KubernetesEvaluation:
        """The Kubernetes mapping of this config (`evaluation.job_variables`, `flow_run_tags`)."""
        fields = self.model_dump(exclude={"compute_config", "args"})
        return KubernetesEvaluation(**fields, compute=self.compute_config, git_commit=git_commit)


def load_config(path: Path) -> EvaluationConfig:
    """The config at `path`; `InputError(path, "field: problem")` when it is not one."""
    import yaml

    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(path, f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping of settings (image, image_tag, compute_config, args, ...)")
    try:
        return EvaluationConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(path, describe_validation_error(exc)) from None


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
