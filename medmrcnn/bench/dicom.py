"""Benchmark 3: DICOM series loading vs SimpleITK, and DICOM-SEG export vs a bare highdicom call.

Loading: `medmrcnn.io.load_volume(folder)` vs SimpleITK's ImageSeriesReader (GDCM file ordering, then
GetArrayFromImage), both from a warm page cache; the two voxel arrays must be identical.
Export: `medmrcnn.dicomseg.write_seg` of a five-structure label map vs `highdicom.seg.Segmentation(...)` +
`save_as` on the same headers and the same label map (BINARY, empty frames omitted, the highdicom defaults).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.bench.compare import interleaved, median_ratio, memory_ratio, speedup, summarise
from medmrcnn.bench.fixtures import SEG_LABELS
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(str(array.dtype).encode() + str(array.shape).encode() + array.tobytes()).hexdigest()


def load_medmrcnn(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: medmrcnn.io.load_volume on the series folder."""
    from medmrcnn.io import load_volume

    with probe.section():
        volume = load_volume(spec["series"])
    return {"digest": _digest(volume.array), "dtype": str(volume.array.dtype)}


def load_simpleitk(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: SimpleITK ImageSeriesReader on the series folder."""
    import SimpleITK as sitk

    with probe.section():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(spec["series"]))
        array = sitk.GetArrayFromImage(reader.Execute())
    return {"digest": _digest(array), "dtype": str(array.dtype)}


def seg_medmrcnn(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: medmrcnn.dicomseg.write_seg of the label map on the loaded reference series."""
    from medmrcnn.dicomseg import write_seg
    from medmrcnn.io import load_volume
    from medmrcnn.labels import LabelMap

    reference = load_volume(spec["series"])
    labelmap = np.load(spec["labelmap"])
    with probe.section():
        write_seg(labelmap, reference, spec["output"], labels=LabelMap.from_names(SEG_LABELS))
    return {"bytes": Path(spec["output"]).stat().st_size}


def seg_highdicom(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: a bare highdicom Segmentation of the same label map, headers read with pydicom."""
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk
    from pydicom.sr.codedict import codes

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(spec["series"])  # ordered along the slice normal
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    labelmap = np.load(spec["labelmap"])
    algorithm = hd.AlgorithmIdentificationSequence(name="bench", family=codes.cid7162.ArtificialIntelligence,
                                                   version="1")
    with probe.section():
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=i, segment_label=name, segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
            for i, name in enumerate(SEG_LABELS, start=1)
        ]
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=labelmap, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=100,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench", manufacturer_model_name="bench",
            software_versions="1", device_serial_number="0",
        )
        seg.save_as(spec["output"])
    return {"bytes": Path(spec["output"]).stat().st_size}


def bench_dicom_load(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any]) -> dict[str, Any]:
    """medmrcnn vs SimpleITK series loading; seconds, slices/s, peaks, speed-up, identical voxels."""
    series = fixtures["series"]
    spec = {"series": series["path"]}
    samples = interleaved(runner, {"medmrcnn": (load_medmrcnn, spec), "simpleitk": (load_simpleitk, spec)},
                          settings.repeats)
    n = series["shape"][0]
    figures = {name: summarise(s, n, "slices") for name, s in samples.items()}
    same = samples["medmrcnn"][0]["digest"] == samples["simpleitk"][0]["digest"]
    return {
        "series": series["shape"], "files": n, "variants": figures,
        "ratios": {"simpleitk": {"speedup": speedup(samples["simpleitk"], samples["medmrcnn"]),
                                 "median_ratio": median_ratio(samples["simpleitk"], samples["medmrcnn"]),
                                 "cpu_time_speedup": speedup(samples["simpleitk"], samples["medmrcnn"], "cpu_seconds"),
                                 "host_peak_increase": memory_ratio(figures["simpleitk"], figures["medmrcnn"],
                                                                    "host_peak_increase_mb")}},
        "identical_voxels": same, "dtype": samples["medmrcnn"][0]["dtype"],
    }


def bench_seg_export(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any], workdir: str
                     ) -> dict[str, Any]:
    """medmrcnn write_seg vs bare highdicom for the five-structure label map; seconds, peaks, speed-up."""
    base = {"series": fixtures["series"]["path"], "labelmap": fixtures["seg_labelmap"]}
    samples = interleaved(runner, {
        "medmrcnn": (seg_medmrcnn, {**base, "output": str(Path(workdir) / "seg_medmrcnn.dcm")}),
        "highdicom": (seg_highdicom, {**base, "output": str(Path(workdir) / "seg_highdicom.dcm")}),
    }, settings.repeats)
    n = fixtures["series"]["shape"][0]
    figures = {name: summarise(s, n, "slices") for name, s in samples.items()}
    for name in figures:
        figures[name]["bytes"] = samples[name][0]["bytes"]
    return {
        "series": fixtures["series"]["shape"], "segments": len(SEG_LABELS), "segmentation_type": "BINARY",
        "variants": figures,
        "ratios": {"highdicom": {"speedup": speedup(samples["highdicom"], samples["medmrcnn"]),
                                 "median_ratio": median_ratio(samples["highdicom"], samples["medmrcnn"]),
                                 "cpu_time_speedup": speedup(samples["highdicom"], samples["medmrcnn"], "cpu_seconds"),
                                 "host_peak_increase": memory_ratio(figures["highdicom"], figures["medmrcnn"],
                                                                    "host_peak_increase_mb")}},
    }
