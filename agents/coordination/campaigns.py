"""The elections one agent campaigns in (the reserved action `_campaign`), for as long as it lives.

`Campaigns.join` parses a `_campaign` body and starts a `Campaign` for its group unless one runs;
each elected term is announced through `announce`. `stop` ends them all when the agent stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from mabeam.agents.coordination.election import Campaign, CampaignRequest, Elections, LeaderTerm
from mabeam.core.errors import BadRequestError

__all__ = ["Campaigns"]


class Campaigns:
    """One candidate's campaigns, by group."""

    __slots__ = ("_announce", "_by_group", "_candidate", "_elections")

    def __init__(
        self,
        candidate: str,
        elections: Callable[[], Awaitable[Elections]],
        announce: Callable[[LeaderTerm], Awaitable[None]],
    ) -> None:
        self._candidate = candidate
        self._elections = elections
        self._announce = announce
        self._by_group: dict[str, Campaign] = {}

    async def join(self, args: dict[str, Any]) -> dict[str, Any]:
        """`_campaign`: compete for the leadership of a group; reply whether leading now."""
        try:
            request = msgspec.convert(args, CampaignRequest)
        except msgspec.ValidationError as error:
            raise BadRequestError(f"_campaign: {error}") from error
        if request.group not in self._by_group:
            elections = await self._elections()
            self._by_group[request.group] = Campaign(
                elections, request.group, self._candidate, request.ttl, self._announce
            ).start()
        leading = self._by_group[request.group].leading
        return {"group": request.group, "candidate": self._candidate, "leading": leading}

    async def stop(self) -> None:
        """End every campaign (the agent stops or restarts)."""
        campaigns, self._by_group = self._by_group, {}
        for campaign in campaigns.values():
            await campaign.stop()
