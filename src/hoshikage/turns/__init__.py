"""One turn of a chat in no wire format's shape: the request, tool use and reasoning, the
typed events of its answer, and the pieces that turn the engine's text into those events.

Every front end (the OpenAI, Ollama and later APIs, the terminal chat) parses its own input
into these names and renders these events in its own shape; nothing here knows JSON, SSE or
a terminal.
"""
