"""Condition catalogs: one versioned YAML file per condition set, with the MAGIC 5-item expert checklists."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CATALOGS_DIR = Path(__file__).resolve().parent / "catalogs"
NUM_CRITERIA = 5
SKIN_TONES = ("light", "dark")


class CatalogError(ValueError):
    """A catalog file is missing, malformed or inconsistent; the message names the file and the field."""


@dataclass(frozen=True)
class Criterion:
    """One checklist dimension (e.g. ``colour``) with its display label."""

    key: str
    label: str


@dataclass(frozen=True)
class Condition:
    """A condition (or cell class) with its description and its expert checklist, one sentence per criterion."""

    id: str
    display_name: str
    description: str
    checklist: dict[str, str]
    synonyms: tuple[str, ...] = ()
    dataset_label: str | None = None
    colour_by_skin_tone: dict[str, str] = field(default_factory=dict)

    def names(self) -> set[str]:
        """Every name this condition answers to, lower-cased (id, display name, dataset label, synonyms)."""
        candidates = {self.id, self.id.replace("_", " "), self.display_name, *self.synonyms}
        if self.dataset_label:
            candidates.add(self.dataset_label)
        return {name.lower() for name in candidates}


@dataclass(frozen=True)
class Catalog:
    """A versioned set of conditions sharing one list of criteria."""

    name: str
    version: str
    title: str
    modality: str
    source: str
    license: str
    criteria: tuple[Criterion, ...]
    conditions: tuple[Condition, ...]
    prompt_template: str | None = None

    @property
    def ids(self) -> list[str]:
        return [condition.id for condition in self.conditions]

    def find(self, name: str) -> Condition | None:
        """A condition by id, display name, dataset label or synonym (case-insensitive; an underscore may stand for
        a space, as in dataset labels such as ``actinic_keratoses``), or None."""
        wanted = name.strip().lower()
        return next((condition for condition in self.conditions
                     if wanted in condition.names() or wanted.replace("_", " ") in condition.names()), None)

    def get(self, name: str) -> Condition:
        """``find``, raising KeyError (with the catalog's ids) when no condition answers to ``name``."""
        condition = self.find(name)
        if condition is None:
            raise KeyError(f"{name!r} is not in catalog {self.name!r}; its conditions are {self.ids}.")
        return condition

    def checklist(self, name: str, skin_tone: str | None = None) -> list[str]:
        """The condition's checklist as ``"Label: sentence"`` items in criterion order.

        With ``skin_tone`` (``light`` or ``dark``) the colour item uses that skin tone's wording when the catalog
        gives one.
        """
        condition = self.get(name)
        if skin_tone is not None and skin_tone not in SKIN_TONES:
            raise ValueError(f"skin_tone must be one of {SKIN_TONES} or None, got {skin_tone!r}.")
        items = []
        for criterion in self.criteria:
            text = condition.checklist[criterion.key]
            if criterion.key == "colour" and skin_tone in condition.colour_by_skin_tone:
                text = condition.colour_by_skin_tone[skin_tone]
            items.append(f"{criterion.label}: {text}")
        return items


def available_catalogs() -> list[str]:
    """Names of the catalogs shipped with the library."""
    return sorted(path.stem for path in CATALOGS_DIR.glob("*.yaml"))


def catalog_for_labels(label_names: Sequence[str]) -> Catalog | None:
    """The shipped catalog that names every one of ``label_names`` (a dataset's classes), the one with the fewest
    conditions when several do (the most specific), or None."""
    matches = []
    for name in available_catalogs():
        catalog = load_catalog(name)
        if all(catalog.find(label) is not None for label in label_names):
            matches.append(catalog)
    return min(matches, key=lambda catalog: len(catalog.conditions), default=None)


def load_catalog(name_or_path: str | os.PathLike) -> Catalog:
    """Load and validate a shipped catalog by name (``ham10000``) or any catalog file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CATALOGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise CatalogError(f"No catalog {str(name_or_path)!r}; shipped catalogs: {available_catalogs()}.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CatalogError(f"{path.name} is not valid YAML: {error}") from error
    return _parse(raw, path.name)


def _require(mapping: dict, key: str, where: str, kind=str):
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind) or (isinstance(value, (str, list, dict)) and not value):
        raise CatalogError(f"{where}: field {key!r} must be a non-empty {kind.__name__}.")
    return value


def _parse(raw: dict, filename: str) -> Catalog:
    if not isinstance(raw, dict):
        raise CatalogError(f"{filename}: the top level must be a mapping.")
    criteria = []
    for index, item in enumerate(_require(raw, "criteria", filename, list)):
        where = f"{filename}: criteria[{index}]"
        criteria.append(Criterion(_require(item, "key", where), _require(item, "label", where)))
    keys = [criterion.key for criterion in criteria]
    if len(keys) != NUM_CRITERIA or len(set(keys)) != NUM_CRITERIA:
        raise CatalogError(f"{filename}: needs {NUM_CRITERIA} distinct criteria, got {keys}.")
    conditions, seen = [], {}
    for index, item in enumerate(_require(raw, "conditions", filename, list)):
        where = f"{filename}: conditions[{index}]"
        condition_id = _require(item, "id", where)
        where = f"{filename}: condition {condition_id!r}"
        checklist = _require(item, "checklist", where, dict)
        if set(checklist) != set(keys):
            raise CatalogError(f"{where}: checklist keys {sorted(checklist)} must be exactly {keys}.")
        for key in keys:
            _require(checklist, key, f"{where} checklist")
        tones = item.get("colour_by_skin_tone") or {}
        if not isinstance(tones, dict) or not set(tones) <= set(SKIN_TONES):
            raise CatalogError(f"{where}: colour_by_skin_tone may only have keys {SKIN_TONES}.")
        condition = Condition(
            id=condition_id,
            display_name=_require(item, "display_name", where),
            description=_require(item, "description", where).strip(),
            checklist={key: checklist[key].strip() for key in keys},
            synonyms=tuple(item.get("synonyms") or ()),
            dataset_label=item.get("dataset_label"),
            colour_by_skin_tone={tone: text.strip() for tone, text in tones.items()},
        )
        for name in condition.names():
            if name in seen:
                raise CatalogError(f"{where}: name {name!r} is already used by {seen[name]!r}.")
            seen[name] = condition_id
        conditions.append(condition)
    return Catalog(
        name=_require(raw, "name", filename),
        version=str(_require(raw, "version", filename)),
        title=_require(raw, "title", filename),
        modality=_require(raw, "modality", filename),
        source=_require(raw, "source", filename).strip(),
        license=_require(raw, "license", filename),
        criteria=tuple(criteria),
        conditions=tuple(conditions),
        prompt_template=_prompt_template(raw, filename),
    )


def _prompt_template(raw: dict, filename: str) -> str | None:
    template = raw.get("prompt_template")
    if template is not None and (not isinstance(template, str) or "{name}" not in template):
        raise CatalogError(f"{filename}: field 'prompt_template' must be a string with {{name}}, got {template!r}.")
    return template
