"""`trainlab list [GROUP] [--markdown]`: every option of every group, its one-line description and its settings.

Read from the YAML files in conf/ (the description is the comment on the `name:` line), so it never goes stale.
"""
import argparse
import re

from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, GROUPS, options


def describe(group, option):
    """The comment on the option's `name:` line (or its first commented line)."""
    lines = (CONF_DIR / group / f"{option}.yaml").read_text().splitlines()
    comments = [line.split("#", 1)[1].strip() for line in lines
                if "#" in line and not line.lstrip().startswith("-") and "@package" not in line]
    named = [line.split("#", 1)[1].strip() for line in lines if line.startswith("name:") and "#" in line]
    return (named or comments or [""])[0]  # trainer/default.yaml and experiments: their first comment


def rows(groups):
    """(group, option, description, settings) per option; an option built on a sibling shows only what it sets."""
    for group in groups:
        for option, node in options(group).items():
            own = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
            settings = " ".join(f"{k}={v}".replace(" ", "") for k, v in node.items()
                                if k != "name" and (k in own or "defaults" not in own))
            yield group, option, describe(group, option), settings


def main(argv):
    parser = argparse.ArgumentParser(prog="trainlab list", description=__doc__.splitlines()[0])
    parser.add_argument("group", nargs="?", choices=GROUPS + ("experiment",), help="only this group")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (the README's)")
    args = parser.parse_args(argv)
    selected = [args.group] if args.group else list(GROUPS) + ["experiment"]
    if args.markdown:
        print("| group | option | what it is | settings (defaults) |\n|---|---|---|---|")
        for group, option, what, settings in rows(selected):
            what, settings = what.replace("|", "\\|"), re.sub(r"(\S+=\S+)", r"`\1`", settings)
            print(f"| `{group}` | `{option}` | {what} | {settings} |")
        return 0
    from rich.console import Console

    memory = {}
    if args.group == "optimizer":  # measured: one step of each on the default MLP (instruments/memory.py)
        from trainlab.instruments.memory import ratio_text, state_ratios

        memory = {option: ratio_text(ratio) for option, ratio in state_ratios().items()}
    found = [(group, option, f"{what} ({memory[option]})" if option in memory else what, settings)
             for group, option, what, settings in rows(selected)]
    Console().print(options_table(found))
    return 0


def options_table(found):
    """A rich table of (group, option, what, settings) rows that is never cut at 80 columns: the group as a heading
    row, each option (as wide as the longest) beside its description and, below it, its settings, wrapped between
    settings (one longer than the column continues on the next line: `${trainer.max_steps}` is never cut to
    `${data…`)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="trainlab options: group=option, group.key=value", title_justify="left")
    table.add_column("group / option", no_wrap=True, min_width=2 + max(len(r[1]) for r in found))
    table.add_column("what it is; settings (defaults)", overflow="fold")
    for n, (group, option, what, settings) in enumerate(found):
        if n == 0 or found[n - 1][0] != group:
            table.add_row(Text(group, style="bold"), "")
        last = n + 1 == len(found) or found[n + 1][0] != group
        table.add_row(Text.assemble("  ", (option, "cyan")), Text.assemble(what, *(("\n", (settings, "dim"))
                                                                                   if settings else ())),
                      end_section=last)  # a rule between groups
    return table
