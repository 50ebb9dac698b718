"""Our SCT-S/M/L against the paper's Table 3: parameters and GMACs at 24 x 224 x 224, 400 classes.

Counts with ``sct.analysis.flops`` (``component_split``: parameters and FlopCounterMode MACs with the
CPU SDPA formula, in multiply-accumulates, the papers' "FLOPs"), on the meta device (shapes only, no
arithmetic). Counts the registered presets (our reading and the literal ``sct_*_literal``) with a split
per component, and the other readings that docs/architecture.md discusses, as config overrides of the
same model; writes the tables into the ``table3`` section of docs/architecture.md.

    .venv/bin/python benchmarks/table3_counts.py             # ours + alternatives (~10 min on 2 cores)
    .venv/bin/python benchmarks/table3_counts.py --ours-only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import sct
from sct.analysis.flops import component_split
from sct.analysis.report import markdown_table, update_doc_section

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
PAPER = {"sct_s": ("SCT-S", 18.72, 88.18), "sct_m": ("SCT-M", 33.48, 162.90), "sct_l": ("SCT-L", 59.89, 342.58)}
READINGS = {"": "ours", "_literal": "literal"}
NO_FIXED_HEAD = (None, None, None, None)
ALTERNATIVES = {
    "A: ours, but every head width = width / heads": dict(dim_heads=NO_FIXED_HEAD),
    "B: 3 blocks, LSH in each (ViLT first only)": dict(num_blocks=3, global_blocks=3, dim_heads=NO_FIXED_HEAD),
    "C: 3 blocks, LSH first only": dict(num_blocks=3, dim_heads=NO_FIXED_HEAD),
}


def count(name: str, **overrides) -> tuple[float, float, dict[str, tuple[int, int]]]:
    """(M params, GMACs, per-component split) of ``name`` at batch 1, 24 x 224 x 224, 400 classes."""
    with torch.device("meta"):
        model = sct.create_model(name, num_classes=400, num_frames=24, img_size=224, **overrides)
        split = component_split(model, torch.empty(1, 3, 24, 224, 224), model.components)
    params, macs = (sum(v[i] for v in split.values()) for i in (0, 1))
    return params / 1e6, macs / 1e9, split


def split_table(splits: dict[str, dict[str, tuple[int, int]]]) -> str:
    """Markdown: one row per component, one column per model (M params / GMACs)."""
    labels = list(dict.fromkeys(label for split in splits.values() for label in split))
    rows = [[label] + [f"{split[label][0] / 1e6:.2f}M / {split[label][1] / 1e9:.1f}" if label in split else "-"
                       for split in splits.values()] for label in labels]
    return markdown_table(["component", *splits], rows)


def _pct(ours: float, paper: float) -> str:
    return f"{100 * (ours / paper - 1):+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()

    rows, splits = [], {}
    for suffix, reading in READINGS.items():
        for name, (label, p_paper, f_paper) in PAPER.items():
            params, gmacs, splits[f"{label} {reading}"] = count(name + suffix)
            rows.append([f"{label} {reading} (`{name + suffix}`)", f"{p_paper:.2f}M",
                         f"{params:.2f}M ({_pct(params, p_paper)})", f"{f_paper:.2f}",
                         f"{gmacs:.2f} ({_pct(gmacs, f_paper)})"])
            print(rows[-1], flush=True)
    md = [markdown_table(["model", "paper #Param", "ours", "paper GFLOPs", "ours (GMACs)"], rows), "",
          "Per component (#Param / GMACs):", "", split_table(splits)]
    if not args.ours_only:
        alt_rows = []
        for reading, overrides in ALTERNATIVES.items():
            cells = [reading]
            for name, (_, p_paper, f_paper) in PAPER.items():
                params, gmacs, _ = count(name, **overrides)
                cells.append(f"{params:.2f}M ({_pct(params, p_paper)}) / {gmacs:.1f} ({_pct(gmacs, f_paper)})")
            alt_rows.append(cells)
            print(cells, flush=True)
        md += ["", "Other readings, same code with config overrides (#Param / GMACs, deviation from Table 3):", "",
               markdown_table(["reading", "SCT-S", "SCT-M", "SCT-L"], alt_rows)]
    md += ["", "Reproduce: `.venv/bin/python benchmarks/table3_counts.py`."]
    text = "\n".join(md)
    print(text)
    if not args.no_doc:
        update_doc_section(DOC, "table3", text)


if __name__ == "__main__":
    main()
