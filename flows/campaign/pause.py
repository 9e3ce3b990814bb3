"""The campaign's pause switch: a Prefect Variable (`naming.pause_variable`) that evaltui and users
set, which belongs to one invocation of the campaign.

An invocation starts paused only with `--paused` and says so when it clears a pause an earlier
invocation left behind; the loop reads the switch every few seconds; a campaign clears it when it
ends, so a finished campaign never reads as paused.
"""

from __future__ import annotations

from prefect.variables import Variable

from flows.naming import pause_variable


class PauseSwitch:
    """One campaign's pause switch, as this invocation last read it (`paused`)."""

    def __init__(self, campaign: str, logger):
        self.campaign = campaign
        self.name = pause_variable(campaign)
        self.logger = logger
        self.paused = False

    async def start(self, paused: bool) -> None:
        """Set the switch for this invocation: on with `--paused`, else off (saying so when an
        earlier invocation left it on)."""
        left = bool(await Variable.aget(self.name, default=False))
        if paused:
            await Variable.aset(self.name, True, overwrite=True)
            self.paused = True
            self.logger.warning("Dispatch paused (--paused): resume from evaltui (p) or set the Prefect Variable %s to false",
                                self.name)
        elif left:
            await Variable.aset(self.name, False, overwrite=True)
            self.logger.warning("An earlier invocation of campaign %r left dispatch paused: this one starts unpaused "
                                "(run it with --paused to start paused)", self.campaign)

    async def read(self) -> None:
        """Follow the switch; a change is said in one line."""
        paused = bool(await Variable.aget(self.name, default=False))
        if paused != self.paused:
            self.logger.warning("Dispatch %s", "paused" if paused else "resumed")
            self.paused = paused

    async def clear(self) -> None:
        """The campaign ends: the pause was this invocation's."""
        if await Variable.aget(self.name, default=False):
            await Variable.aset(self.name, False, overwrite=True)
