"""The sections of the old GKE tool's evaluation config, each a strict model (pure).

That tool's documentation (`cajajejo jobs evaluation parse-job`) lists them: `helm`,
`mlflow_config`, `model_config` (an MLflow artifact or a GCS folder to download before the
evaluation starts) and `tracking_config`. evalq interprets the model download (an init
container), the tracking URI (`MLFLOW_TRACKING_URI`) and the tracking names (flow-run tags);
the image reads every section itself from `/etc/configs/eval_config.yml`, which is the config
file as it was written. Numbers are taken as text where that tool's pydantic 1 models did
(`args: [--max-eval-instances, 10]`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class Helm(Section):
    """HELM's command line and suite, read by the image."""

    args: list[str] = Field(default_factory=list, description="Arguments of HELM's run.")
    suite: str = Field(description="HELM suite version, e.g. v1.")


class MlflowConfig(Section):
    tracking_uri: str = Field(min_length=1, description="The MLflow server; `MLFLOW_TRACKING_URI` in the pod.")


class MlflowArtifact(Section):
    """A model logged to MLflow, downloaded into `/scratch` before the evaluation starts."""

    run_id: str = Field(min_length=1)
    artifact_path: str = Field(min_length=1)
    model_directory: str | None = None
    tokenizer_directory: str | None = None
    tokenizer_hf_repo: str | None = None


class ModelConfig(Section):
    """Where the model comes from: an MLflow artifact or a GCS folder (not both)."""

    mlflow_artifact: MlflowArtifact | None = None
    gs_uri: str | None = Field(None, description="gs://bucket/folder, copied to /scratch/folder.")

    @field_validator("gs_uri")
    @classmethod
    def gcs_address(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("gs://") and len(value) > len("gs://")):
            raise PydanticCustomError("gs_uri", "expected gs://bucket/path, got '{value}'", {"value": value})
        return value

    @model_validator(mode="after")
    def one_source(self) -> "ModelConfig":
        if self.mlflow_artifact is not None and self.gs_uri is not None:
            raise PydanticCustomError(
                "exclusive", "mlflow_artifact and gs_uri are mutually exclusive: give one of them, set the other to null"
            )
        return self


class TrackingConfig(Section):
    experiment_name: str = Field(min_length=1)
    description: str | None = None
    run_name: str | None = None
    tags: dict[str, Any] | list[str] = Field(default_factory=dict, description="A mapping (or a list) of tracking tags.")

    def tag_pairs(self) -> list[tuple[str, str]]:
        """The tags as (name, text) pairs; a list value becomes comma-separated text."""
        if isinstance(self.tags, list):
            return [(tag, "") for tag in self.tags]
        return [(key, ",".join(map(str, value)) if isinstance(value, list) else str(value)) for key, value in self.tags.items()]
