"""The README's tables of settings and commands name everything the code has."""

from __future__ import annotations

from pathlib import Path

from services import cli
from shared.config import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]


def test_every_setting_is_documented_with_its_default() -> None:
    documented = {row[0].strip("`"): row[1] for row in table_rows("Configuration")}
    for name, field in Settings.model_fields.items():
        variable = f"OUTDIAL_{name.upper()}"
        assert variable in documented, f"{variable} is not in the README's Configuration"
        if field.default is not None:
            default = str(field.default)
            shown = documented[variable].strip("`")
            assert shown in (default, default.removesuffix(".0")) or (
                default == "var" and shown == "./var"
            ), (variable, shown, default)
    assert set(documented) <= {f"OUTDIAL_{n.upper()}" for n in Settings.model_fields}


def test_every_subcommand_is_documented() -> None:
    actions = cli.parser()._subparsers._group_actions  # type: ignore[union-attr]
    subcommands = {name for action in actions for name in action.choices}
    documented = {row[0].strip("`").split()[1] for row in table_rows("Commands of the CLI")}
    assert subcommands == documented
