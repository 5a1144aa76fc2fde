"""How `trainlab compare` shows its rows: rich tables that read at 80 columns, markdown, csv and json.

    print_groups(groups, root, n_runs, wide=False)   # one table per data+objective group; key columns unless wide
    to_md(groups, wide), to_csv(groups), to_json(groups)

The key columns: rank, the keys that vary, n, the objective (final and best), status, verdict. Numbers show three
significant digits in the table (md keeps four decimals; csv and json the raw values).
"""
import csv
import io
import json
import math
from collections import Counter

from trainlab.runs.records import METRICS, spec

ABBREV = {"optimizer": "opt", "regularization": "reg", "schedule": "sched", "precision": "prec"}
NUMERIC = ("rank", "n", *METRICS)
STYLE = {"completed": "green", "running": "yellow"}
UNITS = {"opt_mem": "x"}  # shown after the number: optimizer state is 2.0x the parameters' bytes


def recorded(group):
    """The group's metric columns that some row has a value for (a metric no run recorded is no column)."""
    return [m for m in group.metrics if any(r.get(m) is not None for r in group.rows)]


def columns(group, wide=False, best=True):
    """The columns of a group's table: rank, swept values, n (when seeds were averaged), metrics, status, verdict."""
    n = ["n"] if any(r["n"] > 1 for r in group.rows) else []
    shown = recorded(group) if wide else [group.objective, *([f"best_{group.objective}"] if best else [])]
    return ["rank", *group.keys, *n, *shown, "status", "verdict", *(["flags"] if wide else [])]


def short_names(keys, taken=()):
    """Headers that fit: a dotted key's last part, a group's short name; the full key when two would agree."""
    short = {k: k.rsplit(".", 1)[1] if "." in k else ABBREV.get(k, k) for k in keys}
    clash = Counter(short.values())
    return {k: s if clash[s] == 1 and s not in taken else k for k, s in short.items()}


def headers(group, cols, wide=False):
    """Column -> header: '#', short key names, the objective by name, 'best' for its best (full names if wide)."""
    if wide:
        return {c: c for c in cols}
    names = short_names(group.keys, taken=("n", "best", "status", "verdict", group.objective))
    return {c: "#" if c == "rank" else "best" if c == f"best_{group.objective}" else names.get(c, c) for c in cols}


def number(v, digits=3):
    """A number with DIGITS significant digits in fixed notation, scientific below 1e-3 or from 1e5 on."""
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(v)))) if v else digits - 1
        return f"{v:.{decimals}f}", decimals
    return f"{v:.{digits - 1}e}", None


def mean_std(v, std, digits=3):
    """'0.961±0.004' (the std with the mean's decimals), '1.00e+10±3.1e+09', or '-'."""
    if v is None:
        return "-"
    text, decimals = number(v, digits)
    if std is None:
        return text
    return f"{text}±{std:.{decimals}f}" if decimals is not None else f"{text}±{std:.1e}"


def cell(row, col, compact=True):
    """A value as shown: compact numbers in the table, the md form ('0.9000 ± 0.1000') otherwise; '-' if missing."""
    v = row[col]
    if f"{col}_std" in row:  # a metric
        if v is None:
            return "-"
        digits, std = spec(col)[1], row[f"{col}_std"]
        if digits == 0:
            return f"{v:.0f}"  # steps: no std
        if col in UNITS:
            return f"{v:.1f}{UNITS[col]}"  # a ratio: its spread over seeds is not the point
        if compact:
            return mean_std(v, std)
        return f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    if isinstance(v, list):
        return ", ".join(v) or "-"
    return "-" if v is None else str(v)


def title(group):
    """'data=digits: 4 runs, 2 configurations, ranked by val_acc (higher is better)'."""
    better = "higher" if spec(group.objective)[2] else "lower"
    configs = len({tuple(r[k] for k in group.keys) for r in group.rows})
    where = f"data={group.data}: " if group.data is not None else ""
    return (f"{where}{len(group.runs)} runs, {configs} configurations, ranked by {group.objective} ({better} is "
            "better)")


def caption(group, cols, heads, wide):
    """What the headers mean: abbreviations, final vs best, what ± is."""
    notes = [f"{h} = {c}" for c, h in heads.items() if c in group.keys and h != c]
    notes.append("val_*: final, best_*: best evaluation" if wide else f"{group.objective}: final, best: best "
                 "evaluation" if f"best_{group.objective}" in cols else f"{group.objective}: final (best: --wide)")
    if "n" in cols:
        notes.append("mean±std over n seeds")
    if not wide:
        notes.append("--wide: every column")
    return "; ".join(notes)


def simple_table(heads, cells, right=(), wraps=(), styles=None):
    """A borderless rich Table of plain strings whose columns are never cut: each is as wide as its longest cell
    (the columns in WRAPS as their longest word: they may wrap between words). RIGHT: right-aligned column
    indices; STYLES: per row, {column index: rich style}."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for i, head in enumerate(heads):
        texts = [head, *(row[i] for row in cells)]
        longest = max(len(w) for t in texts for w in t.split()) if i in wraps else max(map(len, texts))
        table.add_column(Text(head), justify="right" if i in right else "left", no_wrap=i not in wraps,
                         min_width=longest, overflow="fold")
    for r, row in enumerate(cells):
        style = styles[r] if styles else {}
        table.add_row(*(Text(t, style=style.get(i, "")) for i, t in enumerate(row)))
    return table


def rich_table(group, wide=False, best=True):
    """One group as (title, rich Table, caption); the key columns are never cut (verdict and flags may wrap)."""
    cols = columns(group, wide, best)
    heads = headers(group, cols, wide)
    at = cols.index("status")
    table = simple_table([heads[c] for c in cols], [[cell(r, c) for c in cols] for r in group.rows],
                         right=[i for i, c in enumerate(cols) if c in NUMERIC or c in group.metrics],
                         wraps=[i for i, c in enumerate(cols) if c in ("verdict", "flags")],
                         styles=[{at: STYLE.get(r["status"], "red")} for r in group.rows])
    return title(group), table, caption(group, cols, heads, wide)


def print_groups(groups, root, n_runs, wide=False, console=None):
    """The tables, one per group, then the error of each run that failed."""
    from rich.console import Console
    from rich.markup import escape

    tables = [rich_table(g, wide) for g in groups]
    width = Console().width if Console().is_terminal else None
    tables = [t if wide or width is None or _least(t[1]) <= width else rich_table(g, best=False)  # narrow terminal:
              for g, t in zip(groups, tables)]  # the best evaluation goes first
    console = console or wide_console([t for _, t, _ in tables])
    console.print(f"{n_runs} runs under {escape(str(root))}" + (f", in {len(groups)} groups that are not ranked "
                  "together (different data or objective)" if len(groups) > 1 else ""), highlight=False, soft_wrap=True)
    for head, table, notes in tables:
        console.print()
        console.print(f"[bold]{escape(head)}[/]", highlight=False)
        console.print(table)
        console.print(escape(notes), style="dim", highlight=False)
    for g in groups:
        for r in g.rows:
            for run in r["runs"]:
                if run["summary"].get("error"):
                    console.print(f"[red]{run['summary']['status']}[/] {escape(run['name'])}: "
                                  f"{escape(run['summary']['error'])}", highlight=False)
    print_problems(groups, console, shown_errors=True)


def problems(groups, shown_errors=False):
    """'RUN: metrics.jsonl: 2 unreadable lines skipped' for each file of a run that could not be read in full (a
    damaged summary.json too, unless its error line already said so)."""
    for g in groups:
        for r in g.rows:
            for run in r["runs"]:
                for problem in run.get("problems", []):
                    if not (shown_errors and problem == run["summary"].get("error")):
                        yield f"{run['name']}: {problem}"


def print_problems(groups, console=None, shown_errors=False):
    """The problems, on stderr unless a console is given (csv and json stay parseable)."""
    import sys

    from rich.markup import escape

    for line in problems(groups, shown_errors):
        if console is None:
            print(f"trainlab compare: {line}", file=sys.stderr)
        else:
            console.print(f"[yellow]warning[/] {escape(line)}", highlight=False, soft_wrap=True)


def _least(renderable):
    from rich.console import Console

    return Console(width=10**4).measure(renderable).minimum


def wide_console(renderables):
    """The terminal's console, widened when a table would not fit (rich would drop columns); piped or captured,
    one as wide as the widest renderable: never wrapped or cut."""
    from rich.console import Console

    console = Console()
    sizes = [Console(width=10**4).measure(r) for r in renderables]
    need = max((m.minimum if console.is_terminal else m.maximum for m in sizes), default=0)
    return console if console.is_terminal and need <= console.width else Console(width=max(80, need))


def print_blocks(fmt, blocks, console=None):
    """Blocks of (title, headers, rows of strings, right-aligned column indices, caption) as rich tables or md."""
    from rich.markup import escape

    if fmt == "md":
        for head, heads, rows, right, _ in blocks:
            print(f"**{head}**\n\n" + markdown(heads, rows, right))
        return
    tables = [simple_table(heads, rows, right=right) for _, heads, rows, right, _ in blocks]
    console = console or wide_console(tables)
    for (head, *_, notes), table in zip(blocks, tables):
        console.print(f"\n[bold]{escape(head)}[/]", highlight=False)
        console.print(table)
        console.print(escape(notes), style="dim", highlight=False)


def markdown(head, body, right=None):
    """A markdown table: HEAD names, BODY rows of strings; RIGHT (indices; default: the numeric columns) aligned
    right."""
    right = [i for i, c in enumerate(head) if c in NUMERIC] if right is None else right
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i in right else "---" for i in range(len(head)))
             + "|"]
    lines += ["| " + " | ".join(t.replace("|", "\\|") for t in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_md(groups, wide=False):
    """One markdown table per group (a heading line each when there are several)."""
    out = []
    for g in groups:
        cols = columns(g, wide)
        heading = f"**{title(g)}**\n\n" if len(groups) > 1 else ""
        out.append(heading + markdown(cols, [[cell(r, c, compact=False) for c in cols] for r in g.rows]))
    return "\n".join(out)


def to_csv(groups):
    """Raw numbers of every group (data and objective columns first), one std column per metric; lists by ';'."""
    keys = list(dict.fromkeys(k for g in groups for k in g.keys))
    metrics = list(dict.fromkeys(m for g in groups for m in g.metrics))  # every metric any run recorded
    head = ["data", "objective", "rank", *keys, "n", *(x for m in metrics for x in (m, f"{m}_std")), "status",
            "verdict", "flags", "runs"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for g in groups:
        for r in g.rows:
            flat = r | {"data": g.data, "objective": g.objective, "flags": ";".join(r["flags"]),
                        "runs": ";".join(x["name"] for x in r["runs"])}
            writer.writerow(["" if flat.get(c) is None else flat[c] for c in head])
    return out.getvalue()


def to_json(groups):
    """{"groups": [{data, objective, higher_is_better, swept, rows: [...]}]}; each row names its runs and errors."""
    out = []
    for g in groups:
        rows = [{k: v for k, v in r.items() if k != "runs"} | {
            "runs": [x["name"] for x in r["runs"]],
            "errors": [x["summary"]["error"] for x in r["runs"] if x["summary"].get("error")]} for r in g.rows]
        out.append({"data": g.data, "objective": g.objective, "higher_is_better": spec(g.objective)[2],
                    "swept": g.keys, "rows": rows})
    return json.dumps({"groups": out}, indent=2) + "\n"
