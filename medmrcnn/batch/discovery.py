"""Find the studies of a batch: every image series under the inputs, each one study, bad inputs isolated.

An input is a DICOM file or folder (searched recursively; every image series is one study), a NIfTI / NRRD / MHA /
PNG / TIFF file, a glob, or a text file (.txt/.lst/.list) listing such paths or globs, one a line ('#' starts a
comment).
Discovery reads headers only (`medmrcnn.io.scan`), one sub-folder of an input at a time, and keeps only each
study's file list: DICOM headers take tens of kB each in memory, too much for thousands of studies, so a study's
headers are read again when its turn comes (`reload_series`). A corrupt file does not stop the batch: the folder
holding it becomes one failed study and the rest of the tree is still searched.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from medmrcnn.batch.naming import study_identity, study_name, unusable_name
from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import SeriesInfo, scan
from medmrcnn.io.dicom_scan import DicomFile, group_series, io_workers, read_header, read_headers
from medmrcnn.io.loading import KNOWN_SUFFIXES
from medmrcnn.io.series import DICOM_MULTIFRAME, DICOM_SERIES

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".lst", ".list")
# `scan` reasons meaning "nothing to load here": not a failure for a sub-folder found while isolating a bad file.
_NOTHING_FOUND = ("empty folder", "no DICOM or image files found")


@dataclass
class Study:
    """One unit of work of a batch.

    Attributes:
        name: output folder name (stable across runs and ranks, see `medmrcnn.batch.naming`).
        source: the series folder or file (for messages and the summary).
        info: what `scan` found; None when the input could not be scanned at all.
        error: why the study cannot be processed (found from headers); None when it can be.
    """

    name: str
    source: Path
    info: SeriesInfo | None = None
    error: str | None = None

    @property
    def n_slices(self) -> int:
        """Number of slices to segment (0 when unknown)."""
        return int(self.info.shape[0]) if self.info is not None and self.info.shape else 0


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_root(pattern: str) -> Path:
    """The folder before the first wildcard, so that matches are named by what the wildcards matched."""
    head = []
    for part in Path(pattern).parts:
        if _is_glob(part):
            break
        head.append(part)
    return Path(*head) if head else Path(".")


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VolumeLoadError(path, f"cannot read the list of inputs ({e})") from None
    # '#' starts a comment at the start of a line or after a space (a '#' inside a file name is kept)
    entries = [re.split(r"\s#", ln, maxsplit=1)[0].strip() for ln in lines if not ln.lstrip().startswith("#")]
    return [str(Path(e) if Path(e).is_absolute() else path.parent / e) for e in entries if e]


def _expand_glob(pattern: str) -> list[tuple[Path, Path]]:
    """(match, naming root) for each match of `pattern`, sorted."""
    return [(Path(m), _glob_root(pattern)) for m in sorted(glob.glob(pattern, recursive=True))]


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(path, naming root) for every input after expanding globs and list files.

    Raises VolumeLoadError for a command-line input that does not exist or a glob without match (a usage error);
    a missing path inside a list file is returned as is and reported as a failed study.
    """
    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text)
        if _is_glob(text) and not path.exists():
            matches = _expand_glob(text)
            if not matches:
                raise VolumeLoadError(text, "no file or folder matches this pattern")
            found += matches
        elif not path.exists():
            raise VolumeLoadError(path, "no such file or folder")
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for entry in _read_list(path):
                listed = Path(entry)
                matches = _expand_glob(entry) if _is_glob(entry) and not listed.exists() else []
                found += matches or [(listed, listed if listed.is_dir() else listed.parent)]
        else:
            found.append((path, path if path.is_dir() else path.parent))
    return found


def _children(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and files of `folder`, sorted."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    return [p for p in entries if p.is_dir()], [p for p in entries if not p.is_dir()]


def _header_or_error(path: Path) -> DicomFile | VolumeLoadError | None:
    try:
        return read_header(path)
    except VolumeLoadError as e:
        return e


def _scan_loose_files(folder: Path, files: list[Path]) -> tuple[list[SeriesInfo], list[tuple[Path, str]]]:
    """Series among the files directly in `folder`, each file read on its own so that a bad one is found."""
    infos: list[SeriesInfo] = []
    failures: list[tuple[Path, str]] = []
    for f in (f for f in files if f.name.lower().endswith(KNOWN_SUFFIXES)):
        try:
            infos += scan(f)
        except VolumeLoadError as e:
            failures.append((f, e.reason))
    candidates = [f for f in files if not f.name.lower().endswith(KNOWN_SUFFIXES)]
    with ThreadPoolExecutor(io_workers()) as pool:
        headers = list(pool.map(_header_or_error, candidates))
    dicom = [h for h in headers if isinstance(h, DicomFile)]
    bad = [(f, h.reason) for f, h in zip(candidates, headers, strict=True) if isinstance(h, VolumeLoadError)]
    if bad:
        # The unreadable file belongs to some series of this folder: none of them can be trusted to be complete.
        more = f" (and {len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        failures.append((folder, f"{bad[0][0].name}: {bad[0][1]}{more}; the {len(dicom)} other DICOM files "
                                 "of this folder were not processed"))
    elif dicom:
        infos += group_series(dicom)
    return infos, failures


def _scan_isolated(path: Path, top: bool = True) -> tuple[list[SeriesInfo], list[tuple[Path, str]]]:
    """`scan(path)`, or, when a file below it is bad, the same per sub-folder with the bad folder as a failure."""
    try:
        return scan(path), []
    except VolumeLoadError as e:
        if not path.is_dir() or Path(e.path) == path:
            if not top and e.reason.startswith(_NOTHING_FOUND):
                return [], []
            return [], [(path, e.reason)]
        log.info("%s: %s; searching its sub-folders one by one", path, e)
    try:
        subdirs, files = _children(path)
    except OSError as e:
        return [], [(path, f"cannot list the folder ({e.strerror})")]
    infos, failures = _scan_loose_files(path, files)
    for sub in subdirs:
        more_infos, more_failures = _scan_isolated(sub, top=False)
        infos += more_infos
        failures += more_failures
    return infos, failures


def _scan_in_parts(path: Path, excluded: Path | None) -> Iterator[tuple[list[SeriesInfo], list[tuple[Path, str]]]]:
    """`_scan_isolated(path)` one sub-folder at a time (patients / studies of an export tree), so that the DICOM
    headers held at once are those of one sub-folder, not of thousands of studies."""
    subdirs, files = _children(path) if path.is_dir() else ([], [])
    if not subdirs:
        yield _scan_isolated(path)
        return
    if files:
        yield _scan_loose_files(path, files)
    for sub in subdirs:
        if not _inside(sub, excluded):
            yield _scan_isolated(sub, top=False)


def _nothing_found(path: Path) -> str:
    """Why an input gave no study at all."""
    try:
        scan(path)
    except VolumeLoadError as e:
        return e.reason
    return "no image series found (only non-image DICOM objects, or only outputs of this batch)"


def _without_headers(info: SeriesInfo) -> SeriesInfo:
    """`info` without the DICOM headers of its loading plan (tens of kB per file), re-read by `reload_series`."""
    return replace(info, plan=None) if info.kind in (DICOM_SERIES, DICOM_MULTIFRAME) else info


def reload_series(info: SeriesInfo) -> SeriesInfo:
    """`info` with its loading plan: a study listed by `discover_studies` re-scanned from its own files.

    Raises VolumeLoadError when a file became unreadable or the series changed since it was listed.
    """
    if info.plan is not None:
        return info
    missing = [p for p in info.paths if not p.is_file()]
    if missing:
        raise VolumeLoadError(info.source, f"the series changed on disk since the batch listed it ({len(missing)} "
                                           f"files gone, e.g. {missing[0].name})")
    headers, _ = read_headers(info.paths)
    identity = study_identity(info)
    grouped = group_series(headers)
    found = [i for i in grouped if study_identity(i) == identity]
    if not found and info.subseries:  # a sub-series' own files form one stack: no sub-series label of their own
        found = [i for i in grouped if i.is_image and i.series_uid == info.series_uid and i.kind == info.kind]
    if len(found) != 1 or found[0].shape != info.shape:
        raise VolumeLoadError(info.source, "the series changed on disk since the batch listed it")
    found[0].subseries = info.subseries
    return found[0]


def _problem(info: SeriesInfo, allow_irregular: bool) -> str | None:
    """Why a scanned image series cannot be segmented as it is, None when it can."""
    if info.error:
        return info.error
    if info.irregular and not allow_irregular:
        return f"{info.irregular} (use --allow-irregular to accept it: outputs keep each slice's true position)"
    if info.n_volumes > 1:
        return f"{info.n_volumes} volumes in one file (4D / multi-plane); split it into 3D volumes first"
    return None


def _join_split_series(infos: list[SeriesInfo]) -> list[SeriesInfo]:
    """One entry per series: a DICOM series whose files lie in several sibling folders (CD exports, PACS dumps) was
    found once per folder; its files are grouped again together, so that it is assembled whole."""
    by_identity: dict[str, list[SeriesInfo]] = {}
    for info in infos:
        by_identity.setdefault(study_identity(info), []).append(info)
    joined: list[SeriesInfo] = []
    for identity, parts in by_identity.items():
        if len(parts) == 1 or parts[0].kind != DICOM_SERIES:
            joined += parts
            continue
        headers, _ = read_headers(sorted({p for part in parts for p in part.paths}))
        whole = [i for i in group_series(headers) if study_identity(i) == identity]
        log.info("%s: one series in %d folders, assembled whole", whole[0].source, len(parts))
        joined += [_without_headers(i) for i in whole]
    return joined


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path.resolve() == folder or folder in path.resolve().parents)


def discover_studies(
    inputs: Sequence[str | Path], *, exclude: str | Path | None = None, allow_irregular: bool = False
) -> list[Study]:
    """Every study under `inputs`, in input order then by path; the same series found twice is listed once.

    Args:
        inputs: paths, globs or list files (see the module docstring).
        exclude: a folder whose files are never inputs (the batch's own output folder).
        allow_irregular: accept DICOM stacks with gaps / non-uniform spacing (else they are failed studies).
    Returns:
        Studies; those with `error` set are reported as failed without being loaded.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    studies: dict[str, Study] = {}

    def add(study: Study, identity: str) -> None:
        if identity in studies:
            log.info("%s: found again through another input; processed once", study.source)
        else:
            studies[identity] = study

    for path, root in expand_inputs(inputs):
        if not path.exists():
            add(Study(unusable_name(path, root), path, error="no such file or folder"), f"bad:{path.resolve()}")
            continue
        found, images = [], []
        for infos, failures in _scan_in_parts(path, excluded):
            found += [(Study(unusable_name(bad, root), bad, error=reason), f"bad:{bad.resolve()}")
                      for bad, reason in failures]
            images += [_without_headers(info) for info in infos
                       if info.is_image and not _inside(info.paths[0], excluded)]
        found += [(Study(study_name(info, root), info.source, info, _problem(info, allow_irregular)),
                   study_identity(info)) for info in _join_split_series(images)]
        if not found:
            found.append((Study(unusable_name(path, root), path, error=_nothing_found(path)), f"bad:{path.resolve()}"))
        for study, identity in sorted(found, key=lambda f: (str(f[0].source), f[0].name)):
            add(study, identity)
    return list(studies.values())


__all__ = ["LIST_SUFFIXES", "Study", "discover_studies", "expand_inputs", "reload_series"]
