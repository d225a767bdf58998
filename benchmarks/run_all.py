"""Run every benchmark on the real data in ../shared/data, print the tables and write the docs page.

Writes ``docs/benchmarks.md`` (machine description, then each benchmark's method and tables), its
figures as ``docs/benchmarks.json`` and one PNG chart per figure into ``docs/img/``. ``--only``
re-runs some benchmarks and keeps the others' last figures on the page. Each benchmark script also runs on its own; see
its ``--help``. ``--quick`` runs every script on a tiny input (the smoke test uses it); its figures
mean nothing and it writes to wherever ``--output`` points.

Usage: python benchmarks/run_all.py [--only text text-long images cache scaling threads finetune backends] [--quick]
       [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import Table, machine_description  # noqa: E402

# name -> (module, heading, arguments of the full run, arguments of --quick)
BENCHMARKS = {
    "text": ("bench_text", "Text: TextEncoder vs SentenceTransformer.encode", ["--repeats", "5"],
             ["--limit", "40", "--repeats", "1"]),
    "text-long": ("bench_text", "Text, long paragraphs: TextEncoder vs SentenceTransformer.encode",
                  ["--corpus", "docstrings"], ["--corpus", "docstrings", "--limit", "12", "--repeats", "1"]),
    "images": ("bench_images", "Images: ImageEncoder vs the tutorial loop", [],
               ["--limit", "6", "--repeats", "1"]),
    "cache": ("bench_cache", "Cache: grid searches and full hits", [],
              ["--n-texts", "30", "--n-images", "10", "--n-hit", "200", "--n-hit-images", "10", "--repeats", "1"]),
    "scaling": ("bench_scaling", "Scaling: time and memory as the input grows", [],
                ["--image-factors", "1", "--limit", "8", "--text-sizes", "64", "--precision", "fp32"]),
    "threads": ("bench_threads", "Thread settings", [],
                ["--n-texts", "16", "--n-images", "4", "--repeats", "1"]),
    "finetune": ("bench_finetune", "Fine-tuning: cost per epoch", [], ["--limit", "8", "--repeats", "1"]),
    "backends": ("bench_backends", "Backends: torch, ONNX Runtime and OpenVINO", [],
                 ["--limit", "6", "--limit-texts", "16", "--repeats", "1", "--limit-accuracy", "60", "--draws", "1"]),
}


def draw(chart: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if chart["kind"] == "bar":
        fig, ax = plt.subplots(figsize=(8, 1.0 + 0.45 * len(chart["labels"])))
        labels, values = chart["labels"][::-1], chart["values"][::-1]
        bars = ax.barh(labels, values, color=["#4c72b0" if "baseline" in label else "#dd8452" for label in labels])
        ax.bar_label(bars, fmt="%.3g", padding=3, fontsize=8)
        ax.set_xlabel(chart["xlabel"])
        ax.margins(x=0.15)
    else:  # scaling: time and peak memory against items, one line per input kind
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        for label, s in chart["series"].items():
            left.plot(s["items"], s["seconds"], "o-", label=label)
            line, = right.plot(s["items"], s["memory"], "o-", label=f"{label}: peak above model")
            right.plot(s["items"], s["output"], "--", color=line.get_color(), label=f"{label}: output array")
        left.set(xscale="log", yscale="log", xlabel="items", ylabel="seconds (this machine)",
                 title="time (log-log; slope 1 = linear)")
        right.set(xscale="log", xlabel="items", ylabel="MiB", title="peak resident memory")
        left.legend(fontsize=8)
        right.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(sections: list, quick: bool, image_dir: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Every figure on this page was measured by `make bench` (`python benchmarks/run_all.py`), which "
        "runs each script under `benchmarks/` on the real data in `../shared/data` and rewrites this page. "
        "Each comparison runs both sides in the same process, alternating, and reports the median with "
        "the spread (± half the range) and the ratio. **Absolute times are this machine's**; the ratios "
        "are what carries over to yours.",
        "",
    ]
    machines = sorted({section["machine"] for section in sections.values()})
    if len(machines) == 1:
        lines += [f"- Machine: {machines[0]}"]
    lines += [f"- {section['heading']}: run {section['date']}"
              + (f", {section['minutes']:.0f} min" if section.get("minutes") else "")
              for section in sections.values()]
    if quick:
        lines += ["", "**--quick: tiny inputs, the figures mean nothing.**"]
    lines.append("")
    for name, section in sections.items():
        module, _, full, _ = BENCHMARKS[name]
        command = " ".join([f"python benchmarks/{module}.py", *full])
        lines += [f"## {section['heading']}", "", section["doc"], "", f"Reproduce: `{command}`", ""]
        if len(machines) > 1:
            lines += [f"Machine: {section['machine']}", ""]
        for index, table in enumerate(section["tables"]):
            table = Table(**table)
            lines += [table.markdown(), ""]
            if table.chart:
                lines += [f"![{table.title}]({image_dir}/bench_{name}_{index}.png)", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny inputs: checks the scripts run, nothing more")
    parser.add_argument("--output", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)

    image_dir = args.output.parent / "img"
    image_dir.mkdir(parents=True, exist_ok=True)
    # Results are kept beside the page, so that `--only` re-runs some benchmarks and the page
    # keeps the others' last figures.
    store = args.output.with_suffix(".json")
    sections = json.loads(store.read_text()) if store.exists() and not args.quick else {}
    for name in args.only:
        module_name, heading, full, quick = BENCHMARKS[name]
        print(f"\n===== {heading} =====", flush=True)
        module = importlib.import_module(module_name)
        start = time.perf_counter()
        tables = module.main(quick if args.quick else full)
        for index, table in enumerate(tables):
            if table.chart:
                draw(table.chart, image_dir / f"bench_{name}_{index}.png", table.title)
        sections[name] = {
            "heading": heading, "doc": module.__doc__.split("\nUsage:")[0].strip(),
            "machine": machine_description(), "date": datetime.date.today().isoformat(),
            "minutes": (time.perf_counter() - start) / 60, "tables": [dataclasses.asdict(t) for t in tables],
        }
        store.write_text(json.dumps(sections, indent=1))
    ordered = {name: sections[name] for name in BENCHMARKS if name in sections}
    args.output.write_text(render(ordered, args.quick, "img"))
    print(f"\nWrote {args.output} ({store.name} holds the figures) and its charts in {image_dir}")


if __name__ == "__main__":
    main()
