"""Markdown of the abstention measurements (:mod:`mtst.experiment.abstain`'s ``abstain.json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["write_markdown"]


def _f(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "–"
    if isinstance(v, float | int):
        return "–" if isinstance(v, float) and math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "–" if not isinstance(v, float | int) or math.isnan(v) else f"{100 * v:.1f}%"


def _own_metric(m: Mapping[str, Any]) -> tuple[str, float]:
    return ("accuracy", m["accuracy"]) if "accuracy" in m else ("f1_all", m["f1_all"])


def _heads_table(name: str, run: Mapping[str, Any]) -> list[str]:
    lines = [
        f"**{name}**: in-domain metric (thresholds off), coverage and selective accuracy at the threshold, "
        "ECE before -> after calibration (test split), per variant",
        "",
        "| head | variant | temperature | threshold | metric | value | coverage | selective acc. "
        "| ECE before | ECE after |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    calib = run.get("calibration", {})
    for key, v in run["eval"]["variants"].items():
        for head, m in v["heads"].items():
            c = calib.get(head, {})
            metric, value = _own_metric(m)
            sel = m.get("selective_accuracy", m.get("precision"))
            before = c.get("test", {}).get("ece_before", math.nan) if key.startswith("fp32") else math.nan
            lines.append(
                f"| {head} | {key} | {_f(c.get('temperature'), 3)} | {_f(v['thresholds'][head], 3)} "
                f"| {metric} | {_f(value)} | {_f(m.get('coverage'))} | {_f(sel)} | {_f(before)} "
                f"| {_f(m.get('ece'))} |"
            )
    return [*lines, ""]


def _matrix(name: str, run: Mapping[str, Any]) -> list[str]:
    lines = [
        f"**{name}**: share of other data each head abstains on (sentence head: score under its threshold; "
        "token head: no entity kept), AUROC of its top probability (own test vs other)",
        "",
        "| head | variant | other data | examples | abstained | AUROC | FPR@95%TPR |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for key, v in run["eval"]["variants"].items():
        for head, cells in v["cross"].items():
            for data, c in cells.items():
                lines.append(
                    f"| {head} | {key} | {data} | {c['examples']} | {_pct(c['declined'])} "
                    f"| {_f(c.get('auroc', math.nan))} | {_f(c.get('fpr_at_95_tpr', math.nan))} |"
                )
    return [*lines, ""]


def _study(study: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    scores = study.get("scores", {})
    if scores:
        names = sorted({s for t in scores.values() for row in t.values() for s in row})
        lines += [
            "Out-of-domain score (AUROC own test vs other data, sentence heads):",
            "",
            "| head | other data | " + " | ".join(names) + " |",
            "|---|---|" + "---:|" * len(names),
        ]
        for head, table in scores.items():
            for other, row in table.items():
                lines.append(f"| {head} | {other} | " + " | ".join(_f(row.get(s)) for s in names) + " |")
        lines.append("")
    losses = study.get("losses", {})
    if losses:
        lines += [
            '"Not mine" loss, heads retrained on frozen embeddings (threshold: 98% validation coverage):',
            "",
            "| head | loss | accuracy | other tasks abstained | AUROC vs other tasks |",
            "|---|---|---:|---:|---:|",
        ]
        for head, rows in losses.items():
            for mode, r in rows.items():
                lines.append(
                    f"| {head} | {mode} | {_f(r['accuracy'])} | {_pct(r['declined_other_tasks'])} "
                    f"| {_f(r['auroc_other_tasks'])} |"
                )
        lines.append("")
    return lines


def write_markdown(result: Mapping[str, Any]) -> str:
    """The report: per run its training, heads, abstention matrix, study, the README's examples."""
    lines = [f"# Abstention measurements ({result['config']})", ""]
    for name, run in result["runs"].items():
        trained = f"{run['steps']} steps, {run['train_time_s'] / 60:.1f} min" if "steps" in run else "given"
        lines += [f"## {name} ({trained}; overrides {run.get('overrides') or 'none'})", ""]
        lines += _heads_table(name, run) + _matrix(name, run)
        ex = run.get("examples")
        if ex:
            lines += [f"README examples ({ex['variant']}):", "", "```json"]
            lines += [json.dumps(p, ensure_ascii=False) for p in ex["compact"]]
            lines += ["```", ""]
    for name, study in result.get("study", {}).items():
        lines += [f"## study: {name}", "", *_study(study)]
    return "\n".join(lines)
