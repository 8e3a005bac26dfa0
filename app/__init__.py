"""dmrelay: Instagram direct messages over Meta's Graph API, Postproxy-compatible."""
