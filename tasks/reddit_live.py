"""Live crawler (placeholder until the praw implementation lands)."""
