"""From an organizer's files on disk to what `evalq k8s render|submit` hand on: the manifests
of an image that runs as it is, checked strictly, and the flow run's tags.

The run specs: with a `helm` section (the old tool's format) the first companion file is HELM's
run specs, mounted under its own name and as `run_specs.conf`, its path in the repository in
`HELM_CONFIG_PATH_GIT_REPO`.
"""

from __future__ import annotations

from pathlib import Path

from generate.errors import InputError
from workpools.kubernetes.config import EvaluationConfig

RENDER_NOTE = (
    "# Rendered by `evalq k8s render` from {config} at config version {version}.\n"
    "# Submit it as it is: evalq k8s submit --job-spec {output} --config-version SHA\n"
)
SPEC_SUFFIXES = (".yml", ".yaml")


def image_job(config_path: Path, config: EvaluationConfig, text: str, files: list[Path], options, commit: str) -> list[dict]:
    """The ConfigMap and Job running the config's image as it is (`jobspec.job_manifests`)."""
    from workpools.kubernetes.config import read_config_files
    from workpools.kubernetes.jobspec import (
        EVAL_CONFIG_KEY,
        RUN_SPECS_KEY,
        Origin,
        job_manifests,
    )
    from workpools.kubernetes.provenance import repo_path

    companions = read_config_files(files)
    if EVAL_CONFIG_KEY in companions:
        raise InputError(files[[p.name for p in files].index(EVAL_CONFIG_KEY)],
                         f"{EVAL_CONFIG_KEY} is the config's own name under /etc/configs: rename this file")
    run_specs = files[0] if config.helm is not None and files else None
    if config.helm is not None and run_specs is None:
        raise InputError(config_path, "helm: HELM needs its run specs: pass the run specs file after the config")
    if run_specs is not None and run_specs.name != RUN_SPECS_KEY and RUN_SPECS_KEY in companions:
        raise InputError(files[[p.name for p in files].index(RUN_SPECS_KEY)],
                         f"{run_specs.name} is mounted as {RUN_SPECS_KEY} too (the run specs): rename this file")
    origin = Origin(config_version=commit, config_path=repo_path(config_path),
                    run_specs_path=repo_path(run_specs) if run_specs else None)
    return job_manifests(config, text, companions, run_specs.name if run_specs else None, options, origin)


def checked(manifests: list[dict], versions: list[str], path: Path) -> list[dict]:
    """`manifests` if strictly valid for every version of Kubernetes in `versions`, else `InputError` on `path`."""
    from workpools.kubernetes.render import validate_manifests

    require_prefect_kubernetes()
    problem = validate_manifests(manifests, versions)
    if problem:
        raise InputError(path, problem)
    return manifests


def require_prefect_kubernetes() -> None:
    try:
        import kubernetes_validate  # noqa: F401
        import prefect_kubernetes  # noqa: F401
    except ModuleNotFoundError as exc:
        raise InputError(None, f"{exc.name} is not installed: pip install 'eval-jobqueue[kubernetes]'") from None


def split_output(files: list[Path], output: Path | None) -> tuple[list[Path], Path | None]:
    """The old tool's `CONFIG RUN_SPECS OUTPUT`: a third positional argument ending in .yml/.yaml
    that does not exist is the output; one that holds rendered manifests is refused, with how to
    overwrite it."""
    if output is not None or len(files) != 2 or files[1].suffix not in SPEC_SUFFIXES:
        return files, output
    candidate = files[1]
    if not candidate.exists():
        return files[:1], candidate
    if holds_manifests(candidate):
        raise InputError(candidate, f"holds rendered manifests: to write them there again pass --output {candidate}")
    return files, output


def holds_manifests(path: Path) -> bool:
    import yaml

    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return any(isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc for doc in documents)


def run_tags(config: EvaluationConfig | None, job: dict, commit: str, dirty: bool) -> list[str]:
    """The flow run's tags: image, tag, compute and tracking names (from the config when known), the commit."""
    from workpools.kubernetes.evaluation import flow_run_tags
    from workpools.kubernetes.provenance import DIRTY_TAG

    if config is not None:
        tags = flow_run_tags(config.evaluation(commit))
    else:
        image = job["spec"]["template"]["spec"]["containers"][0].get("image", "")
        tags = [f"image:{image}", f"config-commit:{commit[:12]}"]
    return tags + ["evalq"] + ([DIRTY_TAG] if dirty else [])


def dump_manifests(manifests: list[dict]) -> str:
    """YAML documents in the order given, multi-line texts (the config files) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump_all(manifests, Dumper=Dumper, sort_keys=False)
