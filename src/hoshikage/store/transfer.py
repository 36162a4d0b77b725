"""Export a session to JSON and import one back, timestamps included."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hoshikage.store.database import StoreError
from hoshikage.store.sessions import (
    MessageRecord,
    NewMessage,
    SessionNameTaken,
    SessionRecord,
    SessionStore,
    owner_of,
)

FORMAT_NAME = "hoshikage-session"
FORMAT_VERSION = 1


class _ToolCallDoc(BaseModel):
    id: str
    name: str
    arguments: str = "{}"  # JSON text of an object, as OpenAI carries it


class _MessageDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    timestamp: datetime | None = None
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    finish_reason: str | None = None
    tool_calls: list[_ToolCallDoc] = Field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    reasoning: str | None = None


class _SessionDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["hoshikage-session"] = "hoshikage-session"
    version: int = FORMAT_VERSION
    name: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    messages: list[_MessageDoc]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def export_session(sessions: SessionStore, session_id: str) -> dict[str, Any]:
    record = sessions.get(session_id)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "id": record.id,
        "name": record.name,
        "model": record.model,
        "system_prompt": record.system_prompt,
        "params": record.params,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "messages": [
            {
                "role": message.role,
                "content": message.content,
                "timestamp": _iso(message.created_at),
                "prompt_tokens": message.prompt_tokens,
                "completion_tokens": message.completion_tokens,
                "finish_reason": message.finish_reason,
                **tool_fields(message),
            }
            for message in sessions.messages(session_id)
        ],
    }


def tool_fields(message: MessageRecord) -> dict[str, Any]:
    """What a message adds with tools or thinking (absent from plain messages)."""
    fields: dict[str, Any] = {}
    if message.tool_calls:
        fields["tool_calls"] = [
            {"id": call_id, "name": name, "arguments": arguments}
            for call_id, name, arguments in message.tool_calls
        ]
    for key in ("tool_call_id", "tool_name", "reasoning"):
        if getattr(message, key) is not None:
            fields[key] = getattr(message, key)
    return fields


def write_session_file(sessions: SessionStore, session_id: str, path: Path) -> None:
    """Write atomically (temp file + rename) so a kill never leaves half a file."""
    document = json.dumps(export_session(sessions, session_id), ensure_ascii=False, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(document + "\n", encoding="utf-8")
    temporary.replace(path)


def import_session_file(
    sessions: SessionStore, path: Path, *, namespace: str = "local"
) -> SessionRecord:
    """Create a new session of `namespace` from a JSON file written by export (or by hand);
    its name is dropped if another session of the same owner has it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path} is not a session file: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(raw, list):  # a bare list of messages is accepted too
        raw = {"messages": raw}
    try:
        doc = _SessionDoc.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise StoreError(f"{path} is not a session file: {problems}") from None
    name = doc.name
    if name is not None and sessions.named(name, owner=owner_of(namespace)) is not None:
        name = None  # keep the import; the user can /save it under a new name

    def create(as_name: str | None) -> SessionRecord:
        return sessions.create(
            model=doc.model,
            system_prompt=doc.system_prompt,
            params=doc.params,
            name=as_name,
            created_at=doc.created_at.timestamp() if doc.created_at else None,
            namespace=namespace,
        )

    try:
        record = create(name)
    except SessionNameTaken:  # taken since the check, by another writer of the file
        record = create(None)
    sessions.append(
        record.id,
        [
            NewMessage(
                role=message.role,
                content=message.content,
                prompt_tokens=message.prompt_tokens,
                completion_tokens=message.completion_tokens,
                finish_reason=message.finish_reason,
                created_at=message.timestamp.timestamp() if message.timestamp else time.time(),
                tool_calls=tuple((c.id, c.name, c.arguments) for c in message.tool_calls),
                tool_call_id=message.tool_call_id,
                tool_name=message.tool_name,
                reasoning=message.reasoning,
            )
            for message in doc.messages
        ],
    )
    return sessions.get(record.id)
