"""Run every benchmark on the real data in ../shared/data, print the tables and write the docs page.

Writes ``docs/benchmarks.md`` (machine description, then each benchmark's method and tables) and
one PNG chart per figure into ``docs/img/``. Each benchmark script also runs on its own; see
its ``--help``. ``--quick`` runs every script on a tiny input (the smoke test uses it); its figures
mean nothing and it writes to wherever ``--output`` points.

Usage: python benchmarks/run_all.py [--only text text-long images cache scaling threads] [--quick]
       [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_description  # noqa: E402

# name -> (module, heading, arguments of the full run, arguments of --quick)
BENCHMARKS = {
    "text": ("bench_text", "Text: TextEncoder vs SentenceTransformer.encode", [],
             ["--limit", "40", "--repeats", "1"]),
    "text-long": ("bench_text", "Text, long paragraphs: TextEncoder vs SentenceTransformer.encode",
                  ["--corpus", "docstrings"], ["--corpus", "docstrings", "--limit", "12", "--repeats", "1"]),
    "images": ("bench_images", "Images: ImageEncoder vs the tutorial loop", [],
               ["--limit", "6", "--repeats", "1"]),
    "cache": ("bench_cache", "Cache: grid searches and full hits", [],
              ["--n-texts", "30", "--n-images", "10", "--n-hit", "200", "--repeats", "1"]),
    "scaling": ("bench_scaling", "Scaling: time and memory as the input grows", [],
                ["--image-factors", "1", "--text-sizes", "64"]),
    "threads": ("bench_threads", "Thread settings", [],
                ["--n-texts", "16", "--n-images", "4", "--repeats", "1"]),
}


def draw(chart: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if chart["kind"] == "bar":
        fig, ax = plt.subplots(figsize=(8, 1.0 + 0.45 * len(chart["labels"])))
        labels, values = chart["labels"][::-1], chart["values"][::-1]
        bars = ax.barh(labels, values, color=["#4c72b0" if "baseline" in l else "#dd8452" for l in labels])
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


def render(sections: list, machine: str, seconds: float, quick: bool, image_dir: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Every figure on this page was measured by `make bench` (`python benchmarks/run_all.py`), which "
        "runs each script under `benchmarks/` on the real data in `../shared/data` and rewrites this page. "
        "Each comparison runs both sides in the same process, alternating, and reports the median with "
        "the spread (± half the range) and the ratio. **Absolute times are this machine's**; the ratios "
        "are what carries over to yours.",
        "",
        f"- Machine: {machine}",
        f"- Run: {datetime.date.today().isoformat()}, {seconds / 60:.0f} min in total"
        + (" (**--quick: tiny inputs, the figures mean nothing**)" if quick else ""),
        "",
    ]
    for name, heading, doc, tables in sections:
        module, _, full, _ = BENCHMARKS[name]
        command = " ".join([f"python benchmarks/{module}.py", *full])
        lines += [f"## {heading}", "", doc, "", f"Reproduce: `{command}`", ""]
        for index, table in enumerate(tables):
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
    start = time.perf_counter()
    sections = []
    for name in args.only:
        module_name, heading, full, quick = BENCHMARKS[name]
        print(f"\n===== {heading} =====", flush=True)
        module = importlib.import_module(module_name)
        tables = module.main(quick if args.quick else full)
        for index, table in enumerate(tables):
            if table.chart:
                draw(table.chart, image_dir / f"bench_{name}_{index}.png", table.title)
        doc = module.__doc__.split("\nUsage:")[0].strip()
        sections.append((name, heading, doc, tables))
    page = render(sections, machine_description(), time.perf_counter() - start, args.quick, "img")
    args.output.write_text(page)
    print(f"\nWrote {args.output} and its charts in {image_dir}")


if __name__ == "__main__":
    main()
