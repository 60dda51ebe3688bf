"""A local stand-in for the Telegram Bot API (``POST /bot<token>/sendMessage``) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class FakeBotApi:
    """Records every accepted message; can answer 429 or be stopped to play an outage."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.requests = 0
        self.answer_429 = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _send(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        if self.answer_429 > 0:
            self.answer_429 -= 1
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests",
                    "parameters": {"retry_after": 0},
                },
                status=429,
            )
        body = await request.json()
        self.messages.append(body)
        return web.json_response({"ok": True, "result": {"message_id": len(self.messages)}})

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/sendMessage", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]
