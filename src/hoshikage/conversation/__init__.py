"""Conversations: history and parameters of a chat, presets, and (later) memory."""
