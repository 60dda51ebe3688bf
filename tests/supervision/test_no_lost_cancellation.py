"""No code in the package can lose a cancellation, so every stop reaches every task.

On Python 3.11 ``asyncio.wait_for`` can lose a cancellation of its caller, ``asyncio.shield``
keeps a task running past a stop, and ``suppress(CancelledError)`` around ``await task``
swallows the caller's own stop with the other task's. The package uses ``asyncio.timeout``
and :func:`tradebot.core.tasks.cancel_and_wait` instead; this test keeps it that way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tradebot

PACKAGE = Path(tradebot.__file__).parent


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _findings(source: str, where: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name.split(".")[-1] in ("wait_for", "shield") and name.startswith(
            ("asyncio.", "wait_for", "shield")
        ):
            found.append(f"{where}:{node.lineno}: {name}")
        elif name.split(".")[-1] == "suppress" and any("CancelledError" in _name(a) for a in node.args):
            found.append(f"{where}:{node.lineno}: suppress(CancelledError)")
    return found


def test_the_finder_sees_each_pattern() -> None:
    source = (
        "import asyncio, contextlib\n"
        "async def f(t):\n"
        "    await asyncio.wait_for(t, 1)\n"
        "    await asyncio.shield(t)\n"
        "    with contextlib.suppress(asyncio.CancelledError):\n"
        "        await t\n"
        "    async with asyncio.timeout(1):\n"
        "        await t\n"
    )
    assert [f.split(": ")[1] for f in _findings(source, "x")] == [
        "asyncio.wait_for",
        "asyncio.shield",
        "suppress(CancelledError)",
    ]


def test_no_wait_for_shield_or_suppressed_cancellation_in_the_package() -> None:
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += _findings(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    assert not found, (
        "a cancellation can be lost here (use asyncio.timeout / cancel_and_wait):\n" + "\n".join(found)
    )
