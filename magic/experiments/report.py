"""Summaries of an augmentation experiment: per-condition mean and spread, the markdown report, the plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from .config import CLASSIC, EXTRA_REAL, REAL_ONLY, SYNTHETIC

#: The published numbers this experiment is compared with (percent; CytoDiff: accuracy, MAGIC: see note).
PAPER_ANCHORS = [
    {"paper": "CytoDiff", "classifier": "ResNet (from scratch)", "metric": "accuracy", "real_only": 27.3,
     "with_synthetic": 78.4, "note": "highly imbalanced Matek-19 training set, + per-class LoRA synthetic images"},
    {"paper": "CytoDiff", "classifier": "CLIP", "metric": "accuracy", "real_only": 61.8, "with_synthetic": 76.8,
     "note": "same setting"},
    {"paper": "MAGIC", "classifier": "ResNet18", "metric": "accuracy", "real_only": 29.3,
     "with_synthetic": {"+T2I": 25.6, "+I2I": 31.5, "+DPO": 38.3}, "note": "rho = 0.2 synthetic share per batch"},
    {"paper": "MAGIC", "classifier": "ResNet18", "metric": "few-shot gain", "real_only": None,
     "with_synthetic": {"few-shot gain (points)": 13.89}, "note": "few-shot setting"},
]

HONESTY_NOTE = ("CytoDiff's released splits put synthetic images in the test folds, whereas here every test set is "
                "real only: synthetic images enter training batches only, never validation or test.")

TARGET = {"macro_f1_gain_over_real_only": 0.10, "must_beat": CLASSIC}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of per-seed values."""
    values = [float(value) for value in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def paired_gain(row: dict, base: dict, metric: str) -> float | None:
    """Mean over the seeds both rows ran of ``row``'s ``metric`` minus ``base``'s at the same seed (the difference of
    the means when both ran every seed; a fair one in an interim report where a condition lacks some seeds), or None
    when they share no seed."""
    theirs = dict(zip(base["seeds"], base[metric]["values"]))
    gains = [value - theirs[seed] for seed, value in zip(row["seeds"], row[metric]["values"]) if seed in theirs]
    return statistics.fmean(gains) if gains else None


def summarise(runs: list[dict]) -> list[dict]:
    """One row per condition (runs differing only by seed), with mean/std of test accuracy and macro-F1 and the
    gain over the same classifier's real-only baseline, paired by seed (``paired_gain``)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = (run["classifier"], run["kind"], run["source"], run["per_class"], run["share"])
        groups.setdefault(key, []).append(run)
    rows = []
    for (classifier, kind, source, per_class, share), members in groups.items():
        members = sorted(members, key=lambda run: run["seed"])
        rows.append({
            "classifier": classifier, "condition": members[0]["condition"], "kind": kind, "source": source,
            "per_class": per_class, "share": share, "runs": len(members), "seeds": [run["seed"] for run in members],
            "added_images": statistics.fmean(run["train_images"]["added"] for run in members),
            "accuracy": mean_std([run["test"]["accuracy"] for run in members]),
            "macro_f1": mean_std([run["test"]["macro_f1"] for run in members]),
        })
    baselines = {row["classifier"]: row for row in rows if row["kind"] == REAL_ONLY}
    for row in rows:
        base = baselines.get(row["classifier"])
        for metric in ("accuracy", "macro_f1"):
            row[f"delta_{metric}"] = paired_gain(row, base, metric) if base else None
    return rows


def target_check(rows: list[dict]) -> dict:
    """Per classifier: the best real + synthetic condition by its gain in macro-F1, its gain over real-only and over
    classic augmentation (paired by seed), and whether the issue's target (>= 10 points and above classic
    augmentation) is met."""
    result = {}
    for classifier in dict.fromkeys(row["classifier"] for row in rows):
        mine = [row for row in rows if row["classifier"] == classifier]
        synthetic = [row for row in mine if row["kind"] == SYNTHETIC]
        if not synthetic:
            continue
        best = max(synthetic, key=lambda row: (row["delta_macro_f1"] is not None, row["delta_macro_f1"] or 0.0,
                                               row["macro_f1"]["mean"]))
        classic = next((row for row in mine if row["kind"] == CLASSIC), None)
        over_classic = paired_gain(best, classic, "macro_f1") if classic else None
        gain = best["delta_macro_f1"]
        result[classifier] = {
            "best": f"{best['condition']} n={best['per_class']} rho={_share(best['share'])}",
            "macro_f1_gain_over_real_only": gain, "macro_f1_gain_over_classic": over_classic,
            "met": bool(gain is not None and gain >= TARGET["macro_f1_gain_over_real_only"]
                        and over_classic is not None and over_classic > 0),
        }
    return result


def _profile(profile: str | dict) -> str:
    return profile if isinstance(profile, str) else "proportions " + ", ".join(
        f"{name} {value:g}" for name, value in profile.items())


def _share(share: float | None) -> str:
    return "pool" if share is None else f"{share:g}"


def _pm(stat: dict) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def _delta(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


def _anchor_lines() -> list[str]:
    lines = ["| paper | classifier | metric | real only | with synthetic | setting |", "|---|---|---|---|---|---|"]
    for anchor in PAPER_ANCHORS:
        synthetic = anchor["with_synthetic"]
        if isinstance(synthetic, dict):
            synthetic = ", ".join(f"{name} {value}" for name, value in synthetic.items())
        real = "" if anchor["real_only"] is None else anchor["real_only"]
        lines.append(f"| {anchor['paper']} | {anchor['classifier']} | {anchor['metric']} | {real} | {synthetic} | "
                     f"{anchor['note']} |")
    return lines


def _filter_lines(sources: dict) -> list[str]:
    """A section on the filtered sources: their judge and the images it kept per class (per seed when made per
    seed)."""
    lines = []
    for name, facts in sources.items():
        parts = {f" ({key})": value for key, value in facts.get("per_seed", {}).items()} or {"": facts}
        for where, part in parts.items():
            judged = part.get("filter")
            if not judged:
                continue
            counts = judged["per_class"]
            kept = sum(count["kept"] for count in counts.values())
            made = sum(count["generated"] for count in counts.values())
            per_class = ", ".join(f"{label} {count['kept']}/{count['generated']}" for label, count in counts.items())
            lines.append(f"- `{name}`{where}: judge {judged['judge']}; kept {kept} of {made} images "
                         f"({100 * kept / max(made, 1):.1f} %); per class (kept/generated): {per_class}.")
    if not lines:
        return []
    return ["## Filtered synthetic sources", "",
            "Their rows count images generated per class; training used only those the judge kept (counted in "
            "each run's `added_per_class`).", "", *lines, ""]


def _missing_lines(report: dict) -> list[str]:
    missing = report.get("missing") or []
    if not missing:
        return []
    return [f"- **Interim report**: {len(report['runs'])} of {report['planned']} planned runs finished; conditions "
            "may cover different seeds (see the runs column). Not run yet: "
            + ", ".join(f"`{run_id}`" for run_id in missing) + "."]


def markdown_report(report: dict) -> str:
    """The experiment's report as markdown: setup, the measured table, the target check and the paper anchors."""
    config, rows = report["config"], report["conditions"]
    subset = f"the whole {config['train_split']} split"
    if config["k_shot"]:
        subset = f"k-shot, {config['k_shot']} per class"
    elif config["imbalanced"]:
        subset = (f"imbalanced ({_profile(config['imbalanced'])}, {config['total']} images, "
                  f">= {config['min_per_class']} per class)")
    classifiers = ", ".join(f"`{spec['name']}` ({spec['architecture']}, pretrained={spec['pretrained']}, "
                            f"{spec['image_size']} px)" for spec in config["classifiers"])
    lines = [f"# Augmentation experiment: {config['name']}", ""]
    if config.get("description"):
        lines += [config["description"].strip(), ""]
    lines += [
        f"- Real data: `{config['real_data']}`; real training set: {subset}, drawn per seed from "
        f"`{config['train_split']}`; model selection on the real `{config['val_split']}` split; every metric on the "
        f"real `{config['test_split']}` split (n = {report['test_size']}).",
        f"- Seeds: {config['seeds']}; mean ± sample std over seeds; Δ: the mean over seeds of the gain over the same "
        "seed's real-only run. rho: expected share of each training batch drawn from the added images (pool: added "
        "images sampled like real ones).",
        f"- Classifiers: {classifiers}.",
        f"- Runs: {len(report['runs'])} ({report['ran']} trained now, {report['skipped']} reused); device "
        f"{report['device']}, {report['threads']} CPU threads; wall time {report['wall_s']:.1f} s this call, "
        f"{report['runs_wall_s']:.1f} s summed over runs." + (" **Fast mode** (smoke check: numbers mean nothing)."
                                                             if report["fast"] else ""),
        *_missing_lines(report),
        "", HONESTY_NOTE, "",
        "| classifier | condition | n synthetic/class | rho | runs | accuracy % | macro-F1 % | Δ macro-F1 vs real-only "
        "(points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        added = row["per_class"] if row["kind"] in (SYNTHETIC, EXTRA_REAL) else 0
        share = _share(row["share"]) if row["kind"] in (SYNTHETIC, EXTRA_REAL) else ""
        lines.append(f"| {row['classifier']} | {row['condition']} | {added} | {share} | {row['runs']} | "
                     f"{_pm(row['accuracy'])} | {_pm(row['macro_f1'])} | {_delta(row['delta_macro_f1'])} |")
    lines += ["", "For +extra-real the count is of extra real images asked for per class (classes with fewer left in "
              "the real split get all they have); it bounds what perfect synthetic images could add.", ""]
    lines += _filter_lines(report.get("synthetic_sources") or {})
    if report["target"]:
        lines += ["## Target: >= 10 points macro-F1 over real-only, and above classic augmentation", ""]
        for classifier, check in report["target"].items():
            over_classic = check["macro_f1_gain_over_classic"]
            lines.append(f"- `{classifier}`: best {check['best']}: {_delta(check['macro_f1_gain_over_real_only'])} "
                         f"points over real-only, "
                         f"{'n/a' if over_classic is None else _delta(over_classic)} over classic augmentation: "
                         f"**{'met' if check['met'] else 'not met'}**.")
        lines.append("")
    lines += ["## Paper anchors (their numbers, not measured here)", "", *_anchor_lines(), "",
              f"Note: {HONESTY_NOTE}", "", f"![macro-F1 vs synthetic images per class]({report['plot']})", ""]
    return "\n".join(lines)


def plot_macro_f1(rows: list[dict], path: str | Path) -> Path:
    """macro-F1 (mean ± std over seeds) against images added per class, one panel per classifier and one line
    per added-image condition and rho; the real-only baseline is the point at 0 and a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classifiers = list(dict.fromkeys(row["classifier"] for row in rows))
    figure, axes = plt.subplots(1, len(classifiers), figsize=(5.5 * len(classifiers), 4.2), squeeze=False)
    for axis, classifier in zip(axes[0], classifiers):
        mine = [row for row in rows if row["classifier"] == classifier]
        base = next((row for row in mine if row["kind"] == REAL_ONLY), None)
        if base is not None:
            mean, std = 100 * base["macro_f1"]["mean"], 100 * base["macro_f1"]["std"]
            axis.axhspan(mean - std, mean + std, color="grey", alpha=0.2, label="real-only")
        classic = next((row for row in mine if row["kind"] == CLASSIC), None)
        if classic is not None:
            axis.axhline(100 * classic["macro_f1"]["mean"], color="black", linestyle=":", label="classic augmentation")
        added = [row for row in mine if row["kind"] in (SYNTHETIC, EXTRA_REAL)]
        for condition, share in dict.fromkeys((row["condition"], row["share"]) for row in added):
            points = sorted((row for row in mine if (row["condition"], row["share"]) == (condition, share)),
                            key=lambda row: row["per_class"])
            if base is not None:
                points = [base, *points]
            axis.errorbar([row["per_class"] for row in points], [100 * row["macro_f1"]["mean"] for row in points],
                          yerr=[100 * row["macro_f1"]["std"] for row in points], marker="o", capsize=3,
                          linestyle="--" if condition == "+extra-real" else "-",
                          label=f"{condition} (rho {_share(share)})")
        axis.set_title(classifier)
        axis.set_xlabel("images added per class (synthetic, or extra real)")
        axis.set_ylabel("macro-F1 on the real test split (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
