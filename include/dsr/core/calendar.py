"""Where the controller is: its time zone and country, which calendar days and phone numbers follow.

Deadlines are counted in calendar days of the controller's time zone and rolled past its
country's public holidays (:mod:`include.dsr.sla.deadlines`); a phone number written in
national format is read in the controller's country unless a request says otherwise.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

#: Fabconnect's establishment (Berlin): its supervisory authority's calendar and phone region.
CONTROLLER_COUNTRY = "DE"
#: Calendar days are counted in the controller's local time, not UTC.
CONTROLLER_TZ = ZoneInfo("Europe/Berlin")
