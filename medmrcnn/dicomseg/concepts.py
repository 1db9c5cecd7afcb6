"""Label config: the coded meaning (SNOMED CT category / type / modifier) and display colour of each class name.

The defaults ship in `medmrcnn/resources/seg_label_config.json`; a user file in the same format adds classes or
overrides defaults (see docs/dicom-seg.md). Names match case-insensitively with spaces/hyphens read as underscores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pydicom.sr.coding import Code

from medmrcnn.errors import LabelConfigError

FORMAT = "medmrcnn-seg-label-config"
DEFAULT_CONFIG = "seg_label_config.json"
_CLASS_KEYS = {"category", "type", "modifier", "colour", "aliases"}
_CODE_KEYS = {"scheme", "code", "meaning"}


@dataclass(frozen=True)
class SegmentConcept:
    """What one class means in DICOM: coded category/type (+ optional modifier) and an sRGB display colour."""

    name: str
    category: Code
    type: Code
    modifier: Code | None = None
    colour: tuple[int, int, int] = (128, 174, 128)
    aliases: tuple[str, ...] = ()

    def matches_codes(self, category: Code | None, type_: Code, modifier: Code | None) -> bool:
        """True when a segment's codes mean this class (pydicom maps legacy SRT codes to SCT when comparing)."""
        same_category = category is None or category == self.category
        if modifier is None or self.modifier is None:
            same_modifier = modifier is None and self.modifier is None
        else:
            same_modifier = modifier == self.modifier
        return same_category and type_ == self.type and same_modifier


def normalise_name(name: str) -> str:
    """The key a class name is matched by: lower case, spaces and hyphens as underscores."""
    return "_".join(str(name).strip().lower().replace("-", " ").split())


@dataclass(frozen=True)
class LabelConfig:
    """Class name -> SegmentConcept, with aliases; `source` names the files it came from (for messages)."""

    concepts: Mapping[str, SegmentConcept]
    source: str

    def concept_for(self, name: str) -> SegmentConcept:
        """The concept of a class name; raises LabelConfigError saying how to add an unknown class."""
        key = normalise_name(name)
        if key in self.concepts:
            return self.concepts[key]
        for concept in self.concepts.values():
            if key in (normalise_name(a) for a in concept.aliases):
                return concept
        raise LabelConfigError(
            f"class {name!r} has no coded concept in the label config ({self.source}); add it to a JSON file "
            f'{{"classes": {{"{key}": {{"category": {{"scheme": "SCT", "code": ..., "meaning": ...}}, '
            '"type": {...}, "colour": [r, g, b]}}} and pass it with --label-config (label_config= in Python); '
            f"known classes: {sorted(self.concepts)}"
        )

    def name_for_codes(self, category: Code | None, type_: Code, modifier: Code | None) -> str | None:
        """The class name whose codes a segment carries, None when no entry matches (category is advisory)."""
        for strict_category in (True, False):
            for concept in self.concepts.values():
                if concept.matches_codes(category if strict_category else None, type_, modifier):
                    return concept.name
        return None


def _code(value: Any, where: str) -> Code:
    if not isinstance(value, Mapping) or set(value) != _CODE_KEYS:
        raise LabelConfigError(f"{where}: a code needs exactly the keys {sorted(_CODE_KEYS)}; got {value!r}")
    if not all(isinstance(value[k], str) and value[k].strip() for k in _CODE_KEYS):
        raise LabelConfigError(f"{where}: scheme, code and meaning must be non-empty strings; got {value!r}")
    if len(value["code"]) > 16 or len(value["meaning"]) > 64:
        raise LabelConfigError(f"{where}: code value is at most 16 and meaning at most 64 characters (DICOM SH/LO)")
    return Code(value=value["code"].strip(), scheme_designator=value["scheme"].strip(),
                meaning=value["meaning"].strip())


def _concept(name: str, entry: Any, where: str) -> SegmentConcept:
    if not isinstance(entry, Mapping):
        raise LabelConfigError(f"{where}: expected an object with category, type, colour; got {entry!r}")
    unknown = set(entry) - _CLASS_KEYS
    if unknown:
        raise LabelConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_CLASS_KEYS)}")
    for key in ("category", "type"):
        if key not in entry:
            raise LabelConfigError(f"{where}: missing {key!r}")
    colour = entry.get("colour", [128, 174, 128])
    if (not isinstance(colour, list) or len(colour) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)):
        raise LabelConfigError(f"{where}.colour: expected [r, g, b] integers 0-255; got {colour!r}")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise LabelConfigError(f"{where}.aliases: expected a list of names; got {aliases!r}")
    return SegmentConcept(
        name=name,
        category=_code(entry["category"], f"{where}.category"),
        type=_code(entry["type"], f"{where}.type"),
        modifier=_code(entry["modifier"], f"{where}.modifier") if entry.get("modifier") is not None else None,
        colour=(int(colour[0]), int(colour[1]), int(colour[2])),
        aliases=tuple(aliases),
    )


def _read_classes(text: str, source: str) -> dict[str, SegmentConcept]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelConfigError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("classes"), Mapping):
        raise LabelConfigError(f'{source}: expected {{"classes": {{name: {{category, type, colour}}, ...}}}}')
    if doc.get("format", FORMAT) != FORMAT:
        raise LabelConfigError(f"{source}: format {doc.get('format')!r} is not {FORMAT!r}")
    concepts = {}
    for name, entry in doc["classes"].items():
        if not normalise_name(name) or normalise_name(name) == "background":
            raise LabelConfigError(f"{source}: class name {name!r} is not allowed (empty or 'background')")
        concepts[normalise_name(name)] = _concept(name, entry, f"{source}: classes.{name}")
    return concepts


def load_label_config(path: str | Path | None = None) -> LabelConfig:
    """The shipped default concepts, with the classes of `path` (same JSON format) added or overriding them."""
    default = resources.files("medmrcnn").joinpath("resources", DEFAULT_CONFIG)
    concepts = _read_classes(default.read_text(encoding="utf-8"), f"medmrcnn/resources/{DEFAULT_CONFIG}")
    if path is None:
        return LabelConfig(concepts=concepts, source="the default label config")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LabelConfigError(f"{path}: cannot read the label config ({e.strerror or e})") from None
    user = _read_classes(text, str(path))
    for key, concept in user.items():  # an override keeps the default's aliases ("tumor" still means "tumour")
        if key in concepts:
            user[key] = replace(concept, aliases=tuple(dict.fromkeys(concept.aliases + concepts[key].aliases)))
    # User entries first: they win over a default of the same name and are found first by code look-ups.
    merged = {**user, **{k: v for k, v in concepts.items() if k not in user}}
    return LabelConfig(concepts=merged, source=f"the defaults plus {path}")
