"""``torchship diagnose``: the chapter 14 pipeline on CT scans, through the server, the runtime or eager PyTorch."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from torchship.analysis.evaluation import roc_auc, summarize
from torchship.analysis.models import MALIGNANCY, EagerModels, PipelineModels, RuntimeModels, ServerModels
from torchship.analysis.pipeline import CtReport, analyze_ct, classify
from torchship.data.luna.candidates import candidate_info_list
from torchship.data.luna.ct import Ct
from torchship.data.luna.datasets import split_series
from torchship.data.luna.layout import LunaDataError, LunaLayout

log = logging.getLogger(__name__)


def open_models(args: argparse.Namespace) -> PipelineModels:
    if args.url:
        return ServerModels(args.url)
    if args.repository:
        return RuntimeModels(args.repository, device=args.device)
    if args.checkpoints:
        return EagerModels.from_checkpoints(*args.checkpoints)
    raise ValueError("say where the models run: --url URL (torchship-server), --repository DIR or --checkpoints")


def report_dict(r: CtReport) -> dict[str, Any]:
    return {
        "series_uid": r.series_uid,
        "diagnosis": r.diagnosis,
        "prob_malignant": r.prob_malignant,
        "funnel": r.funnel,
        "findings": [
            {
                "center_xyz": list(f.center_xyz),
                "center_irc": list(f.center_irc),
                "voxels": f.voxels,
                "prob_nodule": f.prob_nodule,
                "prob_mal": f.prob_mal,
            }
            for f in r.findings
        ],
    }


def evaluate_data_dir(data_dir: Path, val_stride: int, models: PipelineModels) -> dict[str, Any]:
    """Every validation scan of ``data_dir``: the pipeline's confusion table and funnel, and the malignancy
    classifier's AUC on the annotated validation nodules beside the diameter-only baseline."""
    layout = LunaLayout(data_dir)
    candidates = candidate_info_list(layout, rule="chapter14")
    series = split_series(sorted(layout.series_paths), val_stride, is_val_set=True)
    reports, nodule_scores, nodule_labels, diameters = [], [], [], []
    for uid in series:
        ct = Ct(uid, layout.mhd_path(uid))
        reports.append(analyze_ct(ct, models))
        nodules = [c for c in candidates if c.series_uid == uid and c.is_nodule]
        nodule_scores += classify(ct, [n.center_xyz for n in nodules], models, MALIGNANCY)
        nodule_labels += [n.is_mal for n in nodules]
        diameters += [n.diameter_mm for n in nodules]
        log.info(f"{uid}: {reports[-1].funnel}")
    summary = summarize(reports, candidates)
    summary["series"] = len(series)
    if any(nodule_labels) and not all(nodule_labels):
        summary["malignancy_auc"] = roc_auc(nodule_scores, nodule_labels)[2]
        summary["diameter_auc"] = roc_auc(diameters, nodule_labels)[2]
    summary["validation_nodules"] = len(nodule_labels)
    summary["validation_malignant"] = int(sum(nodule_labels))
    summary["reports"] = [report_dict(r) for r in reports]
    return summary


def run(args: argparse.Namespace) -> int:
    if bool(args.scans) == bool(args.data_dir):
        raise ValueError("give scans (SCAN.mhd ...) or --data-dir (its validation scans), not both or neither")
    started = time.time()
    models = open_models(args)
    try:
        if args.data_dir:
            result: dict[str, Any] = evaluate_data_dir(args.data_dir, args.val_stride, models)
            n = result["nodules"]
            print(
                f"{result['series']} validation scans, {n} nodules: "
                f"segmentation found {result['segmentation_detected']} "
                f"({result['segmentation_false_positives']} other candidates), the nodule classifier kept "
                f"{result['classifier_detected']} ({result['classifier_false_positives']} false positives)"
            )
            print(f"funnel: {result['funnel']}")
            print("confusion (rows non-nodule/benign/malignant; miss, filtered, pred benign, pred malignant):")
            for row in result["confusion"]:
                print(f"  {row}")
            if "malignancy_auc" in result:
                print(
                    f"malignancy AUC {result['malignancy_auc']:.3f}, diameter-only AUC {result['diameter_auc']:.3f} "
                    f"({result['validation_malignant']} malignant of {result['validation_nodules']} nodules)"
                )
        else:
            reports = []
            for scan in args.scans:
                if scan.suffix != ".mhd" or not scan.is_file():
                    raise LunaDataError(f"{scan} is not a MetaIO .mhd file")
                report = analyze_ct(Ct(scan.stem, scan), models)
                reports.append(report_dict(report))
                print(f"{scan.stem}: {report.diagnosis} (p = {report.prob_malignant:.3f}); funnel {report.funnel}")
                for f in report.findings:
                    if f.is_nodule:
                        xyz = ", ".join(f"{v:.1f}" for v in f.center_xyz)
                        print(f"  nodule at ({xyz}) mm: p_nodule {f.prob_nodule:.3f}, p_malignant {f.prob_mal:.3f}")
            result = {"reports": reports}
        result["backend"] = models.name
        result["seconds"] = round(time.time() - started, 2)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        models.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="run the chapter 14 nodule analysis on CT scans (server, native runtime or eager)",
        description="Segmentation -> grouping -> nodule classifier -> malignancy classifier -> diagnosis. Models: "
        "luna_segmentation, luna_classifier and luna_malignancy from torchship-server (--url, binary protocol), "
        "a model repository in-process (--repository) or checkpoints (--checkpoints, eager PyTorch).",
    )
    p.add_argument("scans", nargs="*", type=Path, help="MetaIO .mhd files")
    p.add_argument("--data-dir", type=Path, help="instead of scans: every validation scan of this LUNA layout, scored")
    p.add_argument("--val-stride", type=int, default=10, help="with --data-dir (default %(default)s)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="torchship-server, e.g. http://127.0.0.1:8000")
    where.add_argument("--repository", type=Path, help="model repository run by the native runtime")
    where.add_argument("--checkpoints", type=Path, nargs=3, metavar=("SEG", "NODULE", "MALIGNANCY"))
    p.add_argument("--device", default="cpu", help="with --repository (default %(default)s)")
    p.add_argument("--json", type=Path, help="write the full result here")
    p.set_defaults(func=run)
