"""Alert sinks: webhooks (Slack, Discord, Telegram, plain JSON)."""
