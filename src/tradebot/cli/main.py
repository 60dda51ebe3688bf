"""``tradebot``: the command group. Sub-commands are imported only when invoked, so
``tradebot --help`` and ``tradebot plugins list`` start fast."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from tradebot import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("tradebot.cli.run", "run"),
    "sim": ("tradebot.cli.sim", "sim"),
    "plugins": ("tradebot.cli.plugins", "plugins"),
    "config": ("tradebot.cli.config", "config"),
    "health": ("tradebot.cli.health", "health"),
    "halt": ("tradebot.cli.health", "halt"),
    "resume": ("tradebot.cli.health", "resume"),
    "drill": ("tradebot.cli.drill", "drill"),
    "trades": ("tradebot.cli.history", "trades"),
    "report": ("tradebot.cli.history", "report"),
    "state": ("tradebot.cli.state", "state"),
}
"""Command name -> (module, attribute). A module that is not installed is left out."""

SHORT_HELP: dict[str, str] = {
    "run": "Run the bot (paper or live).",
    "sim": "Run the Kraken-compatible simulator on 127.0.0.1.",
    "plugins": "List, enable and disable plugins.",
    "config": "Check or show the configuration.",
    "health": "Show health per check and the trading state.",
    "halt": "HALT trading on a running (or the next) bot.",
    "resume": "Resume trading after a HALT.",
    "drill": "Rehearse failures against the simulator.",
    "trades": "List every trade with price, fee, strategy and PnL.",
    "report": "Performance per strategy and pair, lifetime and per run.",
    "state": "Check or rebuild the order journal from the exchange.",
}


class LazyGroup(click.Group):
    """A group whose commands are imported the first time they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            name for name, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        cmd: click.Command = getattr(module, attr)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tradebot")
def cli() -> None:
    """tradebot: automated crypto trading that keeps going through faults, heals itself,
    and HALTs when continuing would lose money."""


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="tradebot")


if __name__ == "__main__":
    main()
