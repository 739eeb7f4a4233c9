"""Hub artifacts: card templates, card rendering, atomic saves and pushes that never lose local work.

Every artifact this package writes (LoRA adapters, value heads, reweighting heads, trees,
trajectory and weight datasets) goes through the same three steps:

1. it is written into a temporary folder beside its target and renamed into place only when
   complete (:func:`atomic_save`), so a crash never leaves a half-written folder behind and never
   destroys the previous version;
2. it gets a ``README.md`` card rendered from a template in the top-level ``hub_cards/`` folder
   (:func:`render_card`), whose YAML metadata is built with ``huggingface_hub``'s card data classes
   so it parses back (``model-index`` evaluation results included);
3. it is pushed with :func:`push_folder`; if the push fails, :class:`HubPushError` says that the
   local folder is intact and gives the exact call to retry.

:class:`HubCardMixin` gives ``nn.Module + PyTorchModelHubMixin`` artifacts the same behaviour on
``save_pretrained`` / ``push_to_hub``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

__all__ = [
    "HubPushError",
    "HubCardMixin",
    "atomic_save",
    "available_templates",
    "card_template",
    "make_eval_results",
    "push_folder",
    "push_policy",
    "render_card",
    "save_policy",
]

#: The checkout's top-level template folder (used when the package is not installed from a wheel).
_REPO_CARDS = Path(__file__).resolve().parent.parent / "hub_cards"


class HubPushError(RuntimeError):
    """A push to the Hub failed. The local folder was not touched; the message says what to retry."""

    def __init__(self, folder: str | os.PathLike, repo_id: str, repo_type: str, stage: str, cause: BaseException):
        self.folder, self.repo_id, self.repo_type, self.stage, self.cause = (
            Path(folder),
            repo_id,
            repo_type,
            stage,
            cause,
        )
        retry = f"trainers.hub.push_folder({str(folder)!r}, {repo_id!r}, repo_type={repo_type!r})"
        super().__init__(
            f"pushing {str(folder)!r} to the {repo_type} repo {repo_id!r} failed while {stage}: "
            f"{type(cause).__name__}: {cause}. The local folder {str(folder)!r} is intact and complete "
            f"(a push never modifies it); fix the cause (token, network, repo name) and retry with {retry} "
            f"or `hf upload {repo_id} {folder} --repo-type {repo_type}`."
        )


# --------------------------------------------------------------------------------------- templates
def _template_roots() -> list[Any]:
    """Places that may hold the templates, most specific first (wheel install, then checkout)."""
    import importlib.resources

    roots: list[Any] = []
    for getter in (
        lambda: importlib.resources.files("trainers.hub_cards"),
        lambda: importlib.resources.files("trainers").joinpath("hub_cards"),
    ):
        try:
            root = getter()
            if root.is_dir():
                roots.append(root)
        except (ModuleNotFoundError, TypeError, FileNotFoundError, NotADirectoryError):
            continue
    if _REPO_CARDS.is_dir():
        roots.append(_REPO_CARDS)
    return roots


def available_templates() -> list[str]:
    """Names (without ``.md``) of every card template that :func:`card_template` can find."""
    names: set[str] = set()
    for root in _template_roots():
        names.update(
            entry.name[:-3] for entry in root.iterdir() if entry.name.endswith(".md") and entry.name != "README.md"
        )
    return sorted(names)


def card_template(name: str) -> str:
    """Return the text of the card template ``name`` (``"adapter_card"`` or ``"adapter_card.md"``).

    Looks in the installed package first (``trainers.hub_cards``, which the wheel carries), then in
    the checkout's top-level ``hub_cards/`` folder.
    """
    filename = name if name.endswith(".md") else f"{name}.md"
    for root in _template_roots():
        entry = root.joinpath(filename)
        if entry.is_file():
            return entry.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"no card template {filename!r} in hub_cards/ "
        f"(searched: {', '.join(str(r) for r in _template_roots()) or 'nothing found'}); "
        f"available templates: {', '.join(available_templates()) or 'none'}"
    )


# ------------------------------------------------------------------------------------------- cards
_EVAL_RESULT_FIELDS = set(inspect.signature(EvalResult).parameters)


def make_eval_results(
    metrics: Mapping[str, float],
    *,
    dataset_name: str,
    dataset_type: str,
    task_type: str = "reinforcement-learning",
    task_name: str | None = None,
    dataset_split: str | None = None,
    source_name: str | None = None,
) -> list[EvalResult]:
    """Turn ``{"success_rate": 0.41, ...}`` measured on one environment into ``model-index`` entries."""
    results = []
    for metric, value in metrics.items():
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                metric_type=metric,
                metric_name=metric.replace("_", " "),
                metric_value=float(value),
                source_name=source_name,
            )
        )
    return results


def _as_eval_results(items: Sequence[EvalResult | Mapping[str, Any]] | None) -> list[EvalResult] | None:
    if not items:
        return None
    results = []
    for position, item in enumerate(items):
        if isinstance(item, EvalResult):
            results.append(item)
            continue
        unknown = set(item) - _EVAL_RESULT_FIELDS
        if unknown:
            raise ValueError(
                f"eval_results[{position}] has unknown keys {sorted(unknown)}; "
                f"EvalResult takes {sorted(_EVAL_RESULT_FIELDS)}"
            )
        try:
            results.append(EvalResult(**item))
        except TypeError as error:
            raise ValueError(f"eval_results[{position}]: {error}") from error
    return results


def _looks_like_repo_id(value: Any) -> bool:
    if not isinstance(value, str) or not value or value.startswith(("/", ".", "~")) or "\\" in value:
        return False
    return value.count("/") <= 1 and not Path(value).exists()


def _card_kind(name: str, repo_type: str | None) -> str:
    if repo_type is not None:
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")
        return repo_type
    return "dataset" if "dataset" in name else "model"


def render_card(name: str, *, repo_type: str | None = None, **fields: Any) -> ModelCard | DatasetCard:
    """Render the template ``name`` from ``hub_cards/`` into a ``ModelCard`` or ``DatasetCard``.

    ``fields`` are both template variables and card metadata: those that the card data class
    knows (``base_model``, ``datasets``, ``license``, ``tags``, ``library_name``, ``pipeline_tag``,
    ``model_name``, ``eval_results`` for model cards; ``license``, ``pretty_name``,
    ``task_categories``, ``size_categories``, ``source_datasets``, ``configs``... for dataset
    cards) go into the YAML header; every field is also visible to the Jinja template. Templates
    whose name contains ``dataset`` produce a :class:`DatasetCard` unless ``repo_type`` says
    otherwise. ``eval_results`` may hold :class:`EvalResult` objects or dicts of their arguments
    (see :func:`make_eval_results`); they become the ``model-index`` and need ``model_name``
    (defaults to ``repo_id`` or the template name).

    Extra metadata keys go in ``card_metadata`` (a dict merged into the YAML header verbatim).
    """
    kind = _card_kind(name, repo_type)
    template = card_template(name)
    fields = dict(fields)
    extra_metadata = dict(fields.pop("card_metadata", None) or {})
    if kind == "model":
        data_class, card_class = ModelCardData, ModelCard
        eval_results = _as_eval_results(fields.get("eval_results"))
        fields["eval_results"] = eval_results
        if eval_results and not fields.get("model_name"):
            fields["model_name"] = fields.get("repo_id") or name
    else:
        data_class, card_class = DatasetCardData, DatasetCard
    known = set(inspect.signature(data_class.__init__).parameters) - {"self", "kwargs", "ignore_metadata_errors"}
    metadata = {key: value for key, value in fields.items() if key in known and value not in (None, [], "")}
    # Hub metadata must name Hub repos; a local path (a tiny test model, a private checkpoint) stays in
    # the card's text but not in the YAML, where the Hub's validator would reject it.
    for key in ("base_model", "datasets", "source_datasets"):
        if key in metadata:
            values = metadata[key] if isinstance(metadata[key], (list, tuple)) else [metadata[key]]
            kept = [value for value in values if _looks_like_repo_id(value)]
            if not kept:
                del metadata[key]
            else:
                metadata[key] = kept if isinstance(metadata[key], (list, tuple)) else kept[0]
    if kind == "dataset" and fields.get("configs"):
        metadata["configs"] = fields["configs"]
    metadata.update(extra_metadata)
    card_data = data_class(**metadata)
    return card_class.from_template(card_data, template_str=template, **fields)


# -------------------------------------------------------------------------------------- atomic save
@contextlib.contextmanager
def atomic_save(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``directory``; on success it replaces ``directory``.

    On an exception the temporary folder is removed and whatever ``directory`` held before is left
    exactly as it was. The swap is two renames on the same filesystem, so readers see either the
    old complete folder or the new complete one.
    """
    target = Path(directory).resolve()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"cannot save into {str(target)!r}: it exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    # folders a killed save left behind (its staging copy, or the old version it was swapping out)
    for stale in [*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
    except BaseException:
        # Put the previous version back if the second rename did not happen.
        if backup.exists() and not target.exists():
            os.replace(backup, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# -------------------------------------------------------------------------------------------- push
def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload with trainers.hub.push_folder",
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; return the commit URL.

    The folder is only read. Any failure raises :class:`HubPushError` naming the stage that failed
    and the call to retry; the local folder stays complete.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot push {str(folder)!r} to {repo_id!r}: no such folder")
    if not any(folder.iterdir()):
        raise ValueError(f"cannot push {str(folder)!r} to {repo_id!r}: the folder is empty")
    if repo_type not in ("model", "dataset", "space"):
        raise ValueError(f"repo_type must be 'model', 'dataset' or 'space', got {repo_type!r}")
    # Read at call time (huggingface_hub reads it once at import) so a process can point at another hub.
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    except Exception as error:  # noqa: BLE001 - every failure becomes the same actionable error
        raise HubPushError(folder, repo_id, repo_type, "creating the repository", error) from error
    try:
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
        )
    except Exception as error:  # noqa: BLE001
        raise HubPushError(folder, repo_id, repo_type, "uploading the files", error) from error
    return str(getattr(info, "commit_url", info))


# ------------------------------------------------------------------------------------------- mixin
class HubCardMixin:
    """Give a ``PyTorchModelHubMixin`` artifact a card from ``hub_cards/`` and atomic saves.

    Use it first in the bases, e.g. ``class ValueHeads(HubCardMixin, nn.Module,
    PyTorchModelHubMixin)``; set ``card_template_name`` and override :meth:`card_fields` to return
    the template's variables (base model, hyperparameters, ``eval_results``...). Keyword arguments
    passed as ``model_card_kwargs`` to ``save_pretrained`` / ``push_to_hub`` take precedence.

    ``save_pretrained`` writes through :func:`atomic_save`, and ``push_to_hub`` pushes through
    :func:`push_folder`, so a failed push raises :class:`HubPushError` instead of a bare HTTP error.
    """

    card_template_name: str = "adapter_card"

    def card_fields(self) -> dict[str, Any]:
        """Template variables and metadata for this artifact's card (override in subclasses)."""
        return {}

    def generate_model_card(self, *args, **kwargs) -> ModelCard:  # called by ModelHubMixin.save_pretrained
        fields = {**self.card_fields(), **kwargs}
        return render_card(self.card_template_name, repo_type="model", **fields)

    def save_pretrained(self, save_directory, *, push_to_hub: bool = False, repo_id: str | None = None, **kwargs):
        push_kwargs = {key: kwargs.pop(key) for key in ("token", "private", "commit_message") if key in kwargs}
        with atomic_save(save_directory) as staging:
            super().save_pretrained(staging, **kwargs)  # type: ignore[misc]
        if push_to_hub:
            return push_folder(save_directory, repo_id or Path(save_directory).name, **push_kwargs)
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        config: Any = None,
        commit_message: str = "Upload with trainers",
        private: bool | None = None,
        token: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        **_: Any,
    ) -> str:
        # Not a TemporaryDirectory: when the push fails the saved folder must survive so that the
        # error's retry instruction points at something real.
        folder = Path(tempfile.mkdtemp(prefix="trainers-push-")) / repo_id.replace("/", "--")
        self.save_pretrained(folder, config=config, model_card_kwargs=model_card_kwargs)
        url = push_folder(folder, repo_id, token=token, private=private, commit_message=commit_message)
        shutil.rmtree(folder.parent, ignore_errors=True)
        return url


# ---------------------------------------------------------------------------------------- policies
def _policy_card_fields(model) -> dict[str, Any]:
    peft_config = getattr(model, "peft_config", None)
    fields: dict[str, Any] = {"is_adapter": bool(peft_config)}
    if peft_config:
        adapter = next(iter(peft_config.values()))
        fields["base_model"] = adapter.base_model_name_or_path
        fields["library_name"] = "peft"
        lora = {key: getattr(adapter, key) for key in ("r", "lora_alpha", "lora_dropout") if hasattr(adapter, key)}
        targets = getattr(adapter, "target_modules", None)
        if targets:
            lora["target_modules"] = ",".join(sorted(targets)) if not isinstance(targets, str) else targets
        fields["adapter_settings"] = lora
    else:
        config = getattr(model, "config", None)
        fields["base_model"] = getattr(config, "_name_or_path", None) or None
        fields["library_name"] = "transformers"
    fields["pipeline_tag"] = "text-generation"
    return fields


def save_policy(model, directory: str | os.PathLike, *, tokenizer=None, **card_fields: Any) -> Path:
    """Save a policy (PEFT adapter or full causal LM) with a card from ``hub_cards/adapter_card.md``; atomic.

    ``card_fields`` fill the template: ``repo_id``, ``trainer_class``, ``method``, ``paper_title``,
    ``paper_url``, ``datasets`` (repo ids), ``hyperparameters`` (dict), ``eval_results`` (see
    :func:`make_eval_results`), ``license``, ``tags``, ``summary``. The base model, library and
    LoRA settings are read from the model. Loads back with ``AutoPeftModelForCausalLM`` (adapters)
    or ``AutoModelForCausalLM`` (full models).
    """
    fields = {**_policy_card_fields(model), **card_fields}
    if fields.get("adapter_settings"):
        fields["hyperparameters"] = {
            **{f"lora_{k}" if not k.startswith("lora") else k: v for k, v in fields["adapter_settings"].items()},
            **(fields.get("hyperparameters") or {}),
        }
    tags = list(fields.get("tags") or [])
    for tag in ("trl", "trainers", "agents"):
        if tag not in tags:
            tags.append(tag)
    fields["tags"] = tags
    with atomic_save(directory) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        render_card("adapter_card", repo_type="model", **fields).save(str(staging / "README.md"))
    return Path(directory)


def push_policy(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    local_dir: str | os.PathLike | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload policy with trainers",
    **card_fields: Any,
) -> str:
    """:func:`save_policy` into ``local_dir`` (or a folder kept on failure) and :func:`push_folder` it."""
    keep = local_dir is not None
    folder = Path(local_dir) if keep else Path(tempfile.mkdtemp(prefix="trainers-push-")) / repo_id.replace("/", "--")
    save_policy(model, folder, tokenizer=tokenizer, repo_id=repo_id, **card_fields)
    url = push_folder(folder, repo_id, token=token, private=private, commit_message=commit_message)
    if not keep:
        shutil.rmtree(folder.parent, ignore_errors=True)
    return url
