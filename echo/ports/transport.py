"""The Transport port between Core and its Agents. In-process channels (all-in-one) or gRPC
(split): the same shape."""

from __future__ import annotations

from typing import Protocol

from echo.domain.messages import AgentToCore, CoreToAgent


class LinkClosed(Exception):
    """The other side of a link is gone."""


class AgentUnavailable(Exception):
    """Core tried to send to an Agent that is not connected."""


class AgentLink(Protocol):
    """An Agent's end of its link to Core."""

    async def send(self, msg: AgentToCore) -> None: ...

    async def receive(self) -> CoreToAgent:
        """The next message from Core; raises LinkClosed when Core is gone."""
        ...

    async def receive_many(self, limit: int) -> list[CoreToAgent]:
        """Wait for at least one message from Core, then take whatever else is already waiting."""
        ...

    async def aclose(self) -> None: ...


class CoreHub(Protocol):
    """Core's end: one inbox from every Agent, and a way to reach each Agent."""

    async def receive(self) -> tuple[str, AgentToCore]:
        """(agent_id, message) from any Agent."""
        ...

    async def receive_many(self, limit: int) -> list[tuple[str, AgentToCore]]:
        """Wait for at least one message, then take whatever else is already waiting (up to ``limit``).
        Core handles such a group with one store commit."""
        ...

    async def send(self, agent_id: str, msg: CoreToAgent) -> None:
        """Raises AgentUnavailable when that Agent is not connected."""
        ...


class Transport(Protocol):
    def hub(self) -> CoreHub: ...

    async def connect(self, agent_id: str) -> AgentLink: ...
