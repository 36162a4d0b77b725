"""The HTTP server: OpenAI-, Ollama- and Hoshikage-native routes over one inference service."""

from hoshikage.api.app import create_app

__all__ = ["create_app"]
