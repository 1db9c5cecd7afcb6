"""`LabelMap`: class names <-> contiguous ids, 0 = background (implicit)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from medmrcnn.errors import LabelConfigError


@dataclass(frozen=True)
class LabelMap:
    """Foreground class names in id order; id 0 is background and never listed.

    >>> LabelMap.from_names(["liver", "kidney"]).id_of("kidney")
    2
    """

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise LabelConfigError("label map is empty: give at least one foreground class")
        if len(set(self.names)) != len(self.names):
            raise LabelConfigError(f"label map has duplicate class names: {list(self.names)}")
        if any(n.lower() == "background" or not n for n in self.names):
            raise LabelConfigError("label map must not list 'background' or empty names: id 0 is background")

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "LabelMap":
        """Label map whose ids are 1..N in the given order."""
        return cls(tuple(names))

    @classmethod
    def from_dict(cls, mapping: Mapping[str, int]) -> "LabelMap":
        """Label map from {name: id}; ids must be exactly 1..N (background 0 may be given and is dropped)."""
        items = sorted((int(v), str(k)) for k, v in mapping.items() if int(v) != 0)
        ids = [i for i, _ in items]
        if ids != list(range(1, len(ids) + 1)):
            raise LabelConfigError(f"label ids must be contiguous 1..N (0 = background); got {sorted(ids)}")
        return cls(tuple(n for _, n in items))

    def to_dict(self) -> dict[str, int]:
        """{name: id} with ids 1..N."""
        return {n: i + 1 for i, n in enumerate(self.names)}

    @property
    def num_classes(self) -> int:
        """Number of classes including background (what torchvision's heads expect)."""
        return len(self.names) + 1

    def id_of(self, name: str) -> int:
        """Id of a class name."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise LabelConfigError(f"unknown class {name!r}; known: {list(self.names)}") from None

    def name_of(self, label_id: int) -> str:
        """Class name of an id (1..N)."""
        if not 1 <= label_id <= len(self.names):
            raise LabelConfigError(f"label id {label_id} is outside 1..{len(self.names)}")
        return self.names[label_id - 1]
