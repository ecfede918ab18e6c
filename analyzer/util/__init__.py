"""Small helpers with one home each: time, number formatting, retries, redaction."""
