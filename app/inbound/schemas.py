from pydantic import BaseModel


class Received(BaseModel):
    """The acknowledgement of a stored webhook delivery (`receipt.RECEIVED`)."""

    received: bool
