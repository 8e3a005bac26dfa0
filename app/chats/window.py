"""Meta's messaging window, the one statement of the rule: a business may reply up to 24 hours
after the customer's last message, or up to 7 days when a human agent replies (tag
HUMAN_AGENT). With no message from the customer on record, dmrelay cannot know, and Meta
decides.

A chat's `within_messaging_window` and the send check (`app/messages/service.py`, whose SQL
takes `length`) both come from here."""

from datetime import datetime, timedelta

HUMAN_AGENT = "HUMAN_AGENT"
STANDARD = timedelta(hours=24)
HUMAN_AGENT_LENGTH = timedelta(days=7)


def length(tag: str | None) -> timedelta:
    return HUMAN_AGENT_LENGTH if tag == HUMAN_AGENT else STANDARD


def is_open(last_inbound_at: datetime | None, now: datetime, tag: str | None = None) -> bool | None:
    """Whether a reply (with this tag) may be sent now; None when no inbound message is known."""
    if last_inbound_at is None:
        return None
    return now - last_inbound_at <= length(tag)


def closed_reason(last_inbound_at: datetime | None, now: datetime, tag: str | None) -> str | None:
    """Why a reply with this tag may not be sent now, or None if it may (or Meta decides)."""
    if last_inbound_at is None or is_open(last_inbound_at, now, tag):
        return None
    if tag == HUMAN_AGENT or not is_open(last_inbound_at, now, HUMAN_AGENT):
        advice = "Instagram allows no reply until the participant writes again."
    else:
        advice = "A human agent may still reply within 7 days with tag HUMAN_AGENT."
    age = "7 days" if tag == HUMAN_AGENT else "24 hours"
    return (
        f"The messaging window is closed: the participant's last message (last_inbound_at "
        f"{last_inbound_at.isoformat()}) is more than {age} old. {advice}"
    )
